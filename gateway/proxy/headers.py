"""Header rules for forwarding: what is dropped, what is added, both directions."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy, istr

# Field names are case-insensitive (RFC 9110 §5.1), so every rule below holds lower-case
# names and is applied to `name.lower()`. (A set of istr does not do that: an istr hashes
# as the spelling it was made from.)
# RFC 9110 §7.6.1 hop-by-hop fields, plus the de-facto ones proxies drop.
HOP_BY_HOP = frozenset(
    (
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
    )
)
CREDENTIALS = frozenset(("authorization", "x-api-key"))
# Replaced by the gateway's own values (or, for Expect, answered by the gateway itself).
REPLACED = frozenset(
    ("host", "x-request-id", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-for",
     "expect")
)
# Set by aiohttp's server on every response: never copy the upstream's.
RESPONSE_OWN = frozenset(("server", "date", "x-request-id"))
KEYGATE_PREFIX = "x-keygate-"
# The unions above, built once rather than per request.
_REQUEST_DROPPED: frozenset[str] = HOP_BY_HOP | REPLACED
_REQUEST_DROPPED_NO_CREDENTIALS: frozenset[str] = _REQUEST_DROPPED | CREDENTIALS
_RESPONSE_DROPPED: frozenset[str] = HOP_BY_HOP | RESPONSE_OWN


def connection_listed(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """Field names the sender listed in Connection (lower-case): hop-by-hop for this
    message only."""
    listed: set[str] = set()
    for value in headers.getall("Connection", ()):
        listed.update(token.strip().lower() for token in value.split(",") if token.strip())
    return frozenset(listed)


X_REQUEST_ID = istr("X-Request-Id")
X_FORWARDED_FOR = istr("X-Forwarded-For")
X_FORWARDED_PROTO = istr("X-Forwarded-Proto")
X_FORWARDED_HOST = istr("X-Forwarded-Host")


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    forward_credentials: bool,
    identity: Iterable[tuple[str, str]],
    request_id: str,
    client_ip: str | None,
    scheme: str,
    host: str,
) -> CIMultiDict[str]:
    """The headers sent upstream: `host` first, the client's end-to-end fields, then the
    gateway's own."""
    dropped = _REQUEST_DROPPED if forward_credentials else _REQUEST_DROPPED_NO_CREDENTIALS
    if "Connection" in incoming:
        dropped = dropped | connection_listed(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    out.add(hdrs.HOST, host)
    for name, value in incoming.items():
        lower = name.lower()
        if lower in dropped or lower.startswith(KEYGATE_PREFIX):
            continue
        out.add(name, value)
    # Every name added below was dropped above, so add() (no search) is enough.
    out.extend(identity)
    out.add(X_REQUEST_ID, request_id)
    forwarded_for = ", ".join(incoming.getall(X_FORWARDED_FOR, ()))
    if client_ip:
        forwarded_for = f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip
    if forwarded_for:
        out.add(X_FORWARDED_FOR, forwarded_for)
    out.add(X_FORWARDED_PROTO, scheme)
    client_host = incoming.get(hdrs.HOST)
    if client_host:
        out.add(X_FORWARDED_HOST, client_host)
    return out


def downstream_response_headers(
    upstream: CIMultiDictProxy[str], request_id: str
) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones, plus X-Request-Id."""
    dropped = _RESPONSE_DROPPED
    if "Connection" in upstream:
        dropped = dropped | connection_listed(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        if name.lower() not in dropped:
            out.add(name, value)
    out.add(X_REQUEST_ID, request_id)
    return out
