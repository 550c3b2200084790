"""The gateway's decision about one request, shared by the proxy and the check listeners.

Two steps, each raising one Refusal:

- `route`: request target -> normalised path -> matching route (404 `no_route`,
  400 `invalid_path`); nothing is authenticated yet.
- `admit`: credential -> API key or user token -> scopes and org -> last-used stamp ->
  rate limit; returns the identity and RateLimit-* headers.

The proxy (`gateway.proxy.handler`) runs its message checks and WebSocket handshake check
between the two and then forwards; the check listeners (`gateway.check`) answer with the
decision itself. Both therefore refuse and admit exactly the same requests, with one
rate-limit budget and one last-used stamp per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic
from urllib.parse import urlsplit

from multidict import CIMultiDictProxy

from gateway.auth.authenticate import Headers, authorise, identity_headers
from gateway.auth.credentials import read_presented
from gateway.auth.errors import MissingKey, Refusal
from gateway.auth.key_lookup import KeyLookup
from gateway.auth.token_claims import UserIdentity
from gateway.auth.user_tokens import UserTokens
from gateway.config import RouteConfig
from gateway.keys.state import KeyState
from gateway.observability import metrics
from gateway.observability.access_log import AccessLog
from gateway.proxy.client_address import ClientAddress
from gateway.proxy.errors import BadPath, NoRoute
from gateway.proxy.paths import InvalidPath, normalise_path
from gateway.proxy.rate_limiter import RateLimiter
from gateway.proxy.routes import R, RouteMatch, RouteTable

# The `method` label's values: anything else a client invents is counted as "other".
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
)


@dataclass(slots=True)
class Exchange:
    """What the pipeline learned about one request, for the access log and metrics."""

    request_id: str
    method: str
    path: str = "-"
    route: str = "none"
    key: KeyState | None = None
    user: UserIdentity | None = None  # the caller when it presented a user token
    client: str | None = None  # the client address (after server.trusted_proxies)
    user_agent: str | None = None

    def refused(self, refusal: Refusal) -> str:
        """The refusal's outcome; the exchange learns the key or token it was about."""
        if self.key is None:
            self.key = refusal.key  # a known key refused: the log names its prefix
        if self.user is None:
            self.user = refusal.user  # a known token refused: the log names its subject
        return refusal.code

    def record(self, access_log: AccessLog, status: int, outcome: str, started: float) -> None:
        """Count the request and write its access-log line (once, whatever the outcome)."""
        duration = time.perf_counter() - started
        method = self.method if self.method in KNOWN_METHODS else "other"
        metrics.REQUESTS.add((self.route, method, str(status), outcome))
        metrics.REQUEST_DURATION.observe(self.route, duration)
        if access_log.enabled:
            access_log.write(self, status, outcome, duration)


@dataclass(slots=True)
class Routed(Generic[R]):
    """Where a request goes: its normalised path, query and the matching route."""

    path: str
    query: str
    match: RouteMatch[R]


def split_target(raw: str) -> tuple[str, str]:
    """(path, query) of the request target; absolute-form targets keep only their path."""
    if not raw.startswith("/"):
        if raw == "*":
            raise BadPath("The request target '*' is not proxied.")
        parts = urlsplit(raw)
        if not parts.scheme or not parts.netloc:
            raise BadPath("The request target must be a path starting with '/'.")
        return parts.path or "/", parts.query
    path, _, query = raw.partition("?")
    return path, query


def normalised(raw_path: str) -> str:
    try:
        return normalise_path(raw_path)
    except InvalidPath as exc:
        raise BadPath(f"The request path is not acceptable: {exc.reason}.") from None


class Decider:
    """Routes, credentials, scopes, org and rate limits: the decision, without forwarding."""

    def __init__(
        self,
        routes: RouteTable[RouteConfig],
        lookup: KeyLookup,
        limiter: RateLimiter,
        record_use: Callable[[str], None],
        tokens: UserTokens | None = None,
    ) -> None:
        self.routes = routes
        self.lookup = lookup
        self.limiter = limiter
        self.record_use = record_use
        # None unless `user_tokens:` names an issuer: then every credential is a key.
        self.tokens = tokens if tokens else None

    def route(self, method: str, raw_target: str, exchange: Exchange) -> Routed[RouteConfig]:
        raw_path, query = split_target(raw_target)
        exchange.path = path = normalised(raw_path)
        match = self.routes.match(method, path)
        if match is None:
            raise NoRoute()
        exchange.route = match.route.name
        return Routed(path, query, match)

    def admit_now(
        self,
        match: RouteMatch[RouteConfig],
        headers: CIMultiDictProxy[str],
        exchange: Exchange,
    ) -> tuple[Headers, Headers] | None:
        """`admit`, when memory alone decides: a public route, or a key whose very string
        passed every check before, on a route and key without a rate limit. None when the
        decision needs a store, a verify or a counter (then `admit` decides; the check
        listener answers without a task when this one does)."""
        route = match.route
        if route.public:
            return (), ()
        presented, bearer = _credential(headers)
        if route.rate_limit is not None or (bearer and self.tokens is not None):
            return None
        proven = self.lookup.proven(presented)
        if proven is None or proven.rate_limit is not None:
            return None
        key = self.lookup.accept_proven(proven)
        self._admit_key(key, match, exchange)
        return identity_headers(key), ()

    async def admit(
        self,
        match: RouteMatch[RouteConfig],
        headers: CIMultiDictProxy[str],
        client: ClientAddress,
        exchange: Exchange,
    ) -> tuple[Headers, Headers]:
        """(identity headers, RateLimit-* headers) of an admitted request."""
        route = match.route
        if route.public:
            return (), ()
        presented, bearer = _credential(headers)
        user = None
        if bearer and self.tokens is not None:
            user = await self.tokens.recognise(presented)
        limits: Headers = ()
        if user is not None:
            exchange.user = user
            authorise(
                user,
                scopes=route.scopes,
                org_param=route.org_param,
                params=match.params,
                holder="token",
            )
            if route.rate_limit is not None:  # per subject; tokens carry no own limit
                limits = await self.limiter.admit(route, user)
            return user.headers, limits
        key = await self.lookup.identify(presented, client.ip)
        self._admit_key(key, match, exchange)
        # Unlimited routes and keys stop at this test: no counting, no allocation.
        if route.rate_limit is not None or key.rate_limit is not None:
            limits = await self.limiter.admit(route, key)
        return identity_headers(key), limits

    def _admit_key(self, key: KeyState, match: RouteMatch[RouteConfig], exchange: Exchange) -> None:
        """Scopes and org of an identified key (or its refusal), then its use recorded."""
        exchange.key = key
        route = match.route
        authorise(key, scopes=route.scopes, org_param=route.org_param, params=match.params)
        self.record_use(key.id)


def _credential(headers: CIMultiDictProxy[str]) -> tuple[str, bool]:
    """(the credential presented, whether as `Authorization: Bearer`); 401 when none."""
    presented, bearer = read_presented(headers)
    if presented is None:
        raise MissingKey()
    return presented, bearer
