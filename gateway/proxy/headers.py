"""Header rules for forwarding: what is dropped, what is added, both directions."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy, istr

# RFC 9110 §7.6.1 hop-by-hop fields, plus the de-facto ones proxies drop.
HOP_BY_HOP = frozenset(
    istr(h)
    for h in (
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
        "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
    )
)
CREDENTIALS = frozenset((istr("Authorization"), istr("X-API-Key")))
# Replaced by the gateway's own values (or, for Expect, answered by the gateway itself).
REPLACED = frozenset(
    istr(h)
    for h in ("Host", "X-Request-Id", "X-Forwarded-Proto", "X-Forwarded-Host",
              "X-Forwarded-For", "Expect")
)
# Set by aiohttp's server on every response: never copy the upstream's.
RESPONSE_OWN = frozenset(istr(h) for h in ("Server", "Date", "X-Request-Id"))
KEYGATE_PREFIX = "x-keygate-"
# The unions above, built once rather than per request.
_REQUEST_DROPPED: frozenset[str] = HOP_BY_HOP | REPLACED
_REQUEST_DROPPED_NO_CREDENTIALS: frozenset[str] = _REQUEST_DROPPED | CREDENTIALS
_RESPONSE_DROPPED: frozenset[str] = HOP_BY_HOP | RESPONSE_OWN


def connection_listed(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """Field names the sender listed in Connection: hop-by-hop for this message only."""
    listed: set[str] = set()
    for value in headers.getall("Connection", ()):
        listed.update(istr(token.strip()) for token in value.split(",") if token.strip())
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
) -> CIMultiDict[str]:
    """The headers sent upstream: end-to-end fields of the client plus the gateway's own."""
    dropped = _REQUEST_DROPPED if forward_credentials else _REQUEST_DROPPED_NO_CREDENTIALS
    if "Connection" in incoming:
        dropped = dropped | connection_listed(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        if name in dropped or (name[0] in "Xx" and name.lower().startswith(KEYGATE_PREFIX)):
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
    host = incoming.get(hdrs.HOST)
    if host:
        out.add(X_FORWARDED_HOST, host)
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
        if name not in dropped:
            out.add(name, value)
    out.add(X_REQUEST_ID, request_id)
    return out
