"""The proxy's request pipeline, top to bottom.

normalise path -> match route -> authenticate (credential, parse, resolve, status, scopes,
org) -> record last use -> rate limit (only when the route or key has one) -> forward or
relay. Each step raises one Refusal; `handle` turns it into the response and records the
outcome once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from gateway.auth.authenticate import Headers, authorise, identify, identity_headers
from gateway.auth.errors import Refusal
from gateway.auth.resolver import KeyResolver
from gateway.config import Config, RouteConfig
from gateway.observability import metrics
from gateway.observability.access_log import AccessLog
from gateway.observability.request_ids import request_id as make_request_id
from gateway.proxy.errors import BadPath, NoRoute
from gateway.proxy.forward import forward_http
from gateway.proxy.headers import upstream_request_headers
from gateway.proxy.paths import InvalidPath, normalise_path
from gateway.proxy.rate_limiter import RateLimiter
from gateway.proxy.responses import refusal_response
from gateway.proxy.routes import RouteTable
from gateway.proxy.upstreams import Upstream
from gateway.proxy.websocket import WebSocketSessions, relay_websocket
from gateway.store.key_cache import KeyState

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
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


class ProxyHandler:
    def __init__(
        self,
        config: Config,
        routes: RouteTable[RouteConfig],
        resolver: KeyResolver,
        upstreams: dict[str, Upstream],
        sessions: WebSocketSessions,
        access_log: AccessLog,
        record_use: Callable[[str], None],
        limiter: RateLimiter,
    ) -> None:
        self.keys = config.keys
        self.routes = routes
        self.resolver = resolver
        self.upstreams = upstreams
        self.sessions = sessions
        self.access_log = access_log
        self.record_use = record_use
        self.limiter = limiter

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        exchange = Exchange(make_request_id(request.headers.get("X-Request-Id")), request.method)
        outcome = "allowed"
        try:
            response = await self._pipeline(request, exchange)
        except Refusal as refusal:
            outcome = refusal.code
            response = refusal_response(refusal, exchange.request_id)
        duration = time.perf_counter() - started
        method = request.method if request.method in KNOWN_METHODS else "other"
        metrics.REQUESTS.add((exchange.route, method, str(response.status), outcome))
        metrics.REQUEST_DURATION.observe(exchange.route, duration)
        if self.access_log.enabled:
            self.access_log.write(exchange, response.status, outcome, duration)
        return response

    async def _pipeline(self, request: web.BaseRequest, exchange: Exchange) -> web.StreamResponse:
        raw_path, query = split_target(request.raw_path)
        exchange.path = path = _normalised(raw_path)
        match = self.routes.match(request.method, path)
        if match is None:
            raise NoRoute()
        route = match.route
        exchange.route = route.name
        identity: Headers = ()
        limits: Headers = ()
        if not route.public:
            exchange.key = key = await identify(
                request.headers, resolver=self.resolver, keys=self.keys, client=request.remote
            )
            authorise(key, scopes=route.scopes, org_param=route.org_param, params=match.params)
            identity = identity_headers(key)
            self.record_use(key.id)
            # Unlimited routes and keys stop at this test: no counting, no allocation.
            if route.rate_limit is not None or key.rate_limit is not None:
                limits = await self.limiter.admit(route, key)
        upstream = self.upstreams[route.upstream]
        headers = upstream_request_headers(
            request.headers, forward_credentials=route.forward_credentials, identity=identity,
            request_id=exchange.request_id, client_ip=request.remote, scheme=request.scheme,
            host=upstream.host,
        )
        if route.websocket and _is_upgrade(request):
            return await relay_websocket(
                request, upstream, path, query, headers, self.sessions,
                exchange.key.id if exchange.key else None,
            )
        if request.headers.get("Expect", "").lower() == "100-continue":
            # Only now, after authentication, may the client start sending its body.
            await request.writer.write(CONTINUE)
        return await forward_http(
            request, upstream, path, query, headers, route.max_body, exchange.request_id,
            limits,
        )


def _normalised(raw_path: str) -> str:
    try:
        return normalise_path(raw_path)
    except InvalidPath as exc:
        raise BadPath(f"The request path is not acceptable: {exc.reason}.") from None


def _is_upgrade(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"
