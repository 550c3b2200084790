"""Header rules for forwarding: what is dropped, what is added, both directions.

Every rule compares a *canonical* name: lower-case (RFC 9110 §5.1) with `_` and `.`
read as `-`. Upstream stacks fold those spellings together (CGI/WSGI and PHP turn
`X_Keygate_Org`, `X.Keygate.Org` and `X-Keygate-Org` into one `HTTP_X_KEYGATE_ORG`;
nginx with `underscores_in_headers`, Rack and some Go and Node servers do likewise), so
a rule that lets one spelling through lets all of them through. Two further rules close
the class rather than its known members:

- a field the gateway has any rule about (hop-by-hop, credential, framing, set by the
  gateway) passes only in its exact spelling, never as an alias;
- a `Connection` token is hop-by-hop for this message only, and never removes a field
  that frames or describes the message or one the gateway sets.

Names are canonicalised only when they contain `_` or `.`; every set below is built
once, so the common request costs one `lower()` and one set lookup per field.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy, istr

from gateway.console.cookies import SESSION_COOKIE, SSO_COOKIE
from gateway.proxy.client_address import ClientAddress, forwarded_node

# RFC 9110 §7.6.1 hop-by-hop fields, plus the de-facto ones proxies drop.
HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    )
)
CREDENTIALS = frozenset(("authorization", "x-api-key"))
# Replaced by the gateway's own values (or, for Expect, answered by the gateway itself).
GATEWAY_SET = frozenset(
    (
        "host",
        "x-request-id",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-for",
        "forwarded",
        "x-real-ip",
        "expect",
    )
)
# Fields that frame or describe the message: no Connection token removes them.
MESSAGE_FIELDS = frozenset(
    ("content-length", "transfer-encoding", "content-encoding", "content-type", "host")
)
# Set by aiohttp's server on every response: never copy the upstream's.
RESPONSE_OWN = frozenset(("server", "date", "x-request-id"))
KEYGATE_PREFIX = "x-keygate-"

_REQUEST_DROPPED: frozenset[str] = HOP_BY_HOP | GATEWAY_SET
_REQUEST_DROPPED_NO_CREDENTIALS: frozenset[str] = _REQUEST_DROPPED | CREDENTIALS
_RESPONSE_DROPPED: frozenset[str] = HOP_BY_HOP | RESPONSE_OWN
# Names a Connection token can never remove (x-keygate-* are checked by prefix).
_REQUEST_UNLISTABLE: frozenset[str] = MESSAGE_FIELDS | GATEWAY_SET
_RESPONSE_UNLISTABLE: frozenset[str] = MESSAGE_FIELDS | RESPONSE_OWN
# Every name some rule is about: their aliases (`_` or `.` spellings) never pass.
_RULED: frozenset[str] = _REQUEST_DROPPED_NO_CREDENTIALS | MESSAGE_FIELDS
_RESPONSE_RULED: frozenset[str] = _RESPONSE_DROPPED | MESSAGE_FIELDS
_FOLDED = str.maketrans("_.", "--")


def canonical(name: str) -> str:
    """The name as upstream stacks may read it: lower-case, `_` and `.` as `-`."""
    return name.lower().translate(_FOLDED)


def connection_listed(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """Canonical names the sender listed in Connection: hop-by-hop for this message only."""
    listed: set[str] = set()
    for value in headers.getall(hdrs.CONNECTION, ()):
        for token in value.split(","):
            token = token.strip()
            if token:
                listed.add(canonical(token))
    return frozenset(listed)


def _listed_droppable(headers: CIMultiDictProxy[str], unlistable: frozenset[str]) -> frozenset[str]:
    """The Connection-listed names that may be removed (never framing or gateway fields)."""
    return frozenset(
        name
        for name in connection_listed(headers)
        if name not in unlistable and not name.startswith(KEYGATE_PREFIX)
    )


X_REQUEST_ID = istr("X-Request-Id")
X_FORWARDED_FOR = istr("X-Forwarded-For")
X_FORWARDED_PROTO = istr("X-Forwarded-Proto")
X_FORWARDED_HOST = istr("X-Forwarded-Host")
X_REAL_IP = istr("X-Real-IP")
FORWARDED = istr("Forwarded")


# Cookies do not keep to a port: a browser signed in to the console on the admin
# listener's host sends its session cookie to the proxy listener of the same host too.
# It is a Keygate credential, never the upstream's business.
CONSOLE_COOKIE_MARK = "keygate_"
_CONSOLE_COOKIES = frozenset((SESSION_COOKIE, SSO_COOKIE))


def without_console_cookies(value: str) -> str:
    """A Cookie header's value without the console's cookies (RFC 6265 `name=value; …`)."""
    kept = [
        pair
        for pair in value.split(";")
        if pair.strip() and pair.split("=", 1)[0].strip() not in _CONSOLE_COOKIES
    ]
    return ";".join(kept).strip()


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    forward_credentials: bool,
    identity: Iterable[tuple[str, str]],
    request_id: str,
    client: ClientAddress,
    scheme: str,
    host: str,
) -> CIMultiDict[str]:
    """The headers sent upstream: `host` first, the client's end-to-end fields, then the
    gateway's own (identity, request id, the client address, scheme and host)."""
    dropped = _REQUEST_DROPPED if forward_credentials else _REQUEST_DROPPED_NO_CREDENTIALS
    if hdrs.CONNECTION in incoming:
        dropped = dropped | _listed_droppable(incoming, _REQUEST_UNLISTABLE)
    # Gathered as pairs and turned into one CIMultiDict at the end: a list append is a
    # fraction of a CIMultiDict.add, and the constructor adds every pair in one C call.
    out: list[tuple[str, str]] = [(hdrs.HOST, host)]
    for name, value in incoming.items():
        lower = name.lower()
        if "_" in lower or "." in lower:
            folded = lower.translate(_FOLDED)
            if folded in _RULED or folded in dropped or folded.startswith(KEYGATE_PREFIX):
                continue  # an alias of a field with a rule: never passes in any case
        elif lower in dropped or lower.startswith(KEYGATE_PREFIX):
            continue
        elif lower == "cookie" and CONSOLE_COOKIE_MARK in value:
            kept = without_console_cookies(value)
            if kept:
                out.append((name, kept))
            continue
        out.append((name, value))
    # Every name added below was dropped above, so no field is repeated.
    out.extend(identity)
    out.append((X_REQUEST_ID, request_id))
    out.extend(_address_fields(client.ip, client.forwarded_for, scheme, incoming.get(hdrs.HOST)))
    return CIMultiDict(out)


@functools.lru_cache(maxsize=1024)
def _address_fields(
    client_ip: str | None, forwarded_for: str | None, scheme: str, client_host: str | None
) -> tuple[tuple[str, str], ...]:
    """X-Forwarded-For/-Proto/-Host, X-Real-IP and Forwarded, in that order: the same few
    clients, hosts and schemes recur, and `Forwarded` alone costs a regex and formatting."""
    fields: list[tuple[str, str]] = []
    if forwarded_for:
        fields.append((X_FORWARDED_FOR, forwarded_for))
    fields.append((X_FORWARDED_PROTO, scheme))
    if client_host:
        fields.append((X_FORWARDED_HOST, client_host))
    if client_ip is not None:
        fields.append((X_REAL_IP, client_ip))
    fields.append((FORWARDED, forwarded_value(client_ip, client_host, scheme)))
    return tuple(fields)


def forwarded_value(client_ip: str | None, host: str | None, scheme: str) -> str:
    """RFC 7239 `for=…;host=…;proto=…` (one element: the client-sent one never passes)."""
    proto = scheme if scheme in _SCHEMES else _token_or_quoted(scheme)
    if host:
        return f"for={forwarded_node(client_ip)};host={_token_or_quoted(host)};proto={proto}"
    return f"for={forwarded_node(client_ip)};proto={proto}"


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_SCHEMES = frozenset(("http", "https"))


def _token_or_quoted(value: str) -> str:
    if _TOKEN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def downstream_response_headers(
    upstream: CIMultiDictProxy[str], request_id: str
) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones (any spelling), plus
    X-Request-Id."""
    return CIMultiDict(downstream_response_fields(upstream, request_id))


def downstream_response_fields(
    upstream: CIMultiDictProxy[str], request_id: str
) -> list[tuple[str, str]]:
    """`downstream_response_headers` as (name, value) pairs, for a caller that adds more
    before making its one CIMultiDict (web.Response copies whatever it is given)."""
    dropped = _RESPONSE_DROPPED
    if hdrs.CONNECTION in upstream:
        dropped = dropped | _listed_droppable(upstream, _RESPONSE_UNLISTABLE)
    out: list[tuple[str, str]] = []
    for name, value in upstream.items():
        lower = name.lower()
        if "_" in lower or "." in lower:
            folded = lower.translate(_FOLDED)
            if folded in _RESPONSE_RULED or folded in dropped:
                continue
        elif lower in dropped:
            continue
        out.append((name, value))
    out.append((X_REQUEST_ID, request_id))
    return out
