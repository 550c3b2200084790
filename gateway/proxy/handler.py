"""The proxy's request pipeline, top to bottom.

check the message (target, header size, framing) -> normalise path -> match route ->
check a WebSocket handshake -> read the credential -> authenticate it: an API key (parse,
resolve, status) or, when it is a JWS in `Authorization: Bearer` and issuers are
configured, a user token (gateway.auth.user_tokens) -> authorise (scopes, org) -> record
last use (keys) -> rate limit (only when the route or key has one) -> check the
declared body size -> 100 Continue -> forward or relay. Routing and admission are the
decision shared with the check listeners (`gateway.proxy.decision`). Each step raises
one Refusal; `handle` turns it into the response and records the outcome once. Anything else that
escapes is an internal error: logged with its traceback (never its message, which may
quote input), counted, and answered 500 like every other refusal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import HttpVersion11, web

from gateway.auth.errors import Refusal
from gateway.auth.key_lookup import KeyLookup
from gateway.auth.user_tokens import UserTokens
from gateway.config import Config, RouteConfig
from gateway.observability.access_log import AccessLog
from gateway.observability.request_ids import request_id as make_request_id
from gateway.proxy.client_address import client_address
from gateway.proxy.decision import Decider, Exchange
from gateway.proxy.errors import BadRequest, InternalError
from gateway.proxy.forward import check_declared_size, forward_http
from gateway.proxy.framing import (
    Framing,
    check_header_size,
    check_target,
    check_websocket_handshake,
    framing,
    is_websocket_upgrade,
)
from gateway.proxy.headers import X_FORWARDED_FOR, upstream_request_headers
from gateway.proxy.rate_limiter import RateLimiter
from gateway.proxy.responses import refusal_response
from gateway.proxy.routes import RouteTable
from gateway.proxy.upstreams import Upstream
from gateway.proxy.websocket import relay_websocket
from gateway.proxy.ws_sessions import RouteNeed, WebSocketSessions

log = logging.getLogger("keygate")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The `method` label's values: anything else a client invents is counted as "other".
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
)


class ProxyHandler:
    def __init__(
        self,
        config: Config,
        routes: RouteTable[RouteConfig],
        lookup: KeyLookup,
        upstreams: dict[str, Upstream],
        sessions: WebSocketSessions,
        access_log: AccessLog,
        record_use: Callable[[str], None],
        limiter: RateLimiter,
        tokens: UserTokens | None = None,
    ) -> None:
        self.decider = Decider(routes, lookup, limiter, record_use, tokens)
        self.upstreams = upstreams
        self.sessions = sessions
        self.access_log = access_log
        self.server = config.server

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        exchange = Exchange(
            make_request_id(request.headers.get("X-Request-Id")),
            request.method,
            client=request.remote,
            user_agent=request.headers.get("User-Agent"),
        )
        outcome = "allowed"
        try:
            response = await self._pipeline(request, exchange)
        except Refusal as refusal:
            outcome = exchange.refused(refusal)
            response = refusal_response(refusal, exchange.request_id)
            if getattr(refusal, "close_connection", False):
                response.force_close()  # what follows on the connection is not trusted
        except ConnectionError:
            # The client went away mid-request: this answer is for the log and metrics.
            outcome, response = _closing(BadRequest(), exchange)
        except Exception as exc:
            log.error(
                "internal error in route %s (request %s)",
                exchange.route,
                exchange.request_id,
                exc_info=exc,
            )
            outcome, response = _closing(InternalError(), exchange)
        exchange.record(self.access_log, response.status, outcome, started)
        return response

    async def _pipeline(self, request: web.BaseRequest, exchange: Exchange) -> web.StreamResponse:
        body = self._checked_message(request)
        routed = self.decider.route(request.method, request.raw_path, exchange)
        path, query, match = routed.path, routed.query, routed.match
        route = match.route
        upgrade = route.websocket and is_websocket_upgrade(request.headers)
        if upgrade:  # refused before anything is authenticated or contacted
            check_websocket_handshake(request.method, request.version, request.headers)
        client = client_address(
            request.remote,
            request.headers.getall(X_FORWARDED_FOR, ()),
            self.server.trusted_proxies,
        )
        exchange.client = client.ip
        identity, limits = await self.decider.admit(match, request.headers, client, exchange)
        upstream = self.upstreams[route.upstream]
        headers = upstream_request_headers(
            request.headers,
            forward_credentials=route.forward_credentials,
            identity=identity,
            request_id=exchange.request_id,
            client=client,
            scheme=request.scheme,
            host=upstream.host,
        )
        if upgrade:
            return await relay_websocket(
                request,
                upstream,
                path,
                query,
                headers,
                self.sessions,
                exchange.key.id if exchange.key else None,
                route.max_message,
                RouteNeed(route.scopes, route.org_param, match.params),
                exchange.user,
            )
        check_declared_size(body, route.max_body)
        if _expects_continue(request, body):
            # Only now, authenticated and within max_body, may the client send its body.
            await request.writer.write(CONTINUE)
        return await forward_http(
            request,
            upstream,
            path,
            query,
            headers,
            body,
            route.max_body,
            self.server.body_idle_timeout,
            exchange.request_id,
            limits,
        )

    def _checked_message(self, request: web.BaseRequest) -> Framing:
        """The message-level refusals (§3 "Other refusals"); returns the body's framing."""
        check_target(request.method, request.raw_path)
        check_header_size(
            request.raw_headers,
            max_count=self.server.max_header_count,
            max_bytes=self.server.max_header_bytes,
        )
        return framing(request.headers)


def _closing(refusal: Refusal, exchange: Exchange) -> tuple[str, web.Response]:
    response = refusal_response(refusal, exchange.request_id)
    response.force_close()
    return refusal.code, response


def _expects_continue(request: web.BaseRequest, body: Framing) -> bool:
    """RFC 9110 §10.1.1: never to an HTTP/1.0 client, and only when a body will follow."""
    return (
        body.has_body
        and request.version >= HttpVersion11
        and request.headers.get("Expect", "").strip().lower() == "100-continue"
    )
