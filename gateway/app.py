"""Composition root: builds one worker's proxy and admin servers and wires their lifetimes.

Policy lives in the components (key lookup in `gateway.auth.key_lookup`); this module only
builds them and hands their resources to the admin Application's cleanup_ctx, which
`gateway.server` starts before the proxy listener accepts and cleans up after the proxy
listener has drained: the stores close last, after the final flushes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from gateway.admin.api import admin_api
from gateway.admin.health import Readiness, health_routes
from gateway.admin.principals import AdminAuth
from gateway.auth import secret_watch
from gateway.auth.key_lookup import KeyLookup
from gateway.auth.last_used import LastUsedRecorder
from gateway.auth.user_tokens import UserTokens
from gateway.check.decide import Checker
from gateway.check.http_api import CheckHandler
from gateway.check.listener import CheckServer
from gateway.config import Config, RouteConfig
from gateway.keys.format import redact_keys
from gateway.keys.hashing import SecretHasher
from gateway.keys.service import KeyService
from gateway.observability import metrics
from gateway.observability.access_log import AccessLog
from gateway.people.service import PeopleService, public_origin
from gateway.proxy.handler import ProxyHandler
from gateway.proxy.listener import Handler, ProxyServer
from gateway.proxy.rate_limiter import RateLimiter
from gateway.proxy.routes import RouteTable
from gateway.proxy.upstreams import Upstream, close_upstreams, open_upstreams
from gateway.proxy.ws_sessions import WebSocketSessions
from gateway.store.db import Database
from gateway.store.key_cache import RedisKeyCache
from gateway.store.rate_counts import RedisRateCounts
from gateway.store.secret_check import SecretCheck
from gateway.supervisor import Supervisor
from gateway.tokens.service import TokenService, issuer_names, redis_publisher

log = logging.getLogger("keygate")


def server_secret(config: Config) -> bytes:
    if config.secret:
        return config.secret.encode()
    if config.dev:
        return secrets.token_bytes(32)
    raise SystemExit(
        "keygate: KEYGATE_SECRET is not set: give it at least 32 random bytes, the same on "
        "every instance (or set dev: true in the config for local development)"
    )


@dataclass
class Gateway:
    """The long-lived parts of one worker."""

    config: Config
    db: Database
    hasher: SecretHasher
    lookup: KeyLookup
    recorder: LastUsedRecorder
    sessions: WebSocketSessions
    upstreams: dict[str, Upstream]
    handler: ProxyHandler
    # starting -> ready -> draining: what /readyz says (moved by gateway.server)
    readiness: Readiness = field(default_factory=Readiness)
    secret: bytes = b""  # the server secret: the console's CSRF tokens derive from it
    tokens: UserTokens | None = None  # user tokens (SPEC §11), when issuers are configured


def build_gateway(config: Config, secret: bytes) -> Gateway:
    """Build every part; nothing is opened or started until the admin app starts up."""
    timeout = config.server.store_timeout
    db = Database(config.database_url, timeout=timeout, max_size=10)
    redis = RedisKeyCache.connect(config.redis_url, config.cache.redis_ttl, timeout, secret)
    hasher = SecretHasher(config.keys.argon2, threads=config.keys.verify_threads)
    sessions = WebSocketSessions()
    lookup = KeyLookup(
        keys=config.keys,
        cache=config.cache,
        db=db,
        redis=redis,
        hasher=hasher,
        server_secret=secret,
        sessions=sessions,
    )
    recorder = LastUsedRecorder(db, config.last_used.flush_interval, config.last_used.max_pending)
    tokens = None
    if config.user_tokens:
        tokens = UserTokens(
            config.user_tokens,
            db=db,
            server_secret=secret,
            redis=redis.client,
            sessions=sessions,
            max_entries=config.cache.max_entries,
        )
    upstreams = open_upstreams(config.upstreams)
    routes: RouteTable[RouteConfig] = RouteTable.compile(config.routes)
    handler = ProxyHandler(
        config,
        routes,
        lookup,
        upstreams,
        sessions,
        AccessLog(
            config.log.access_log,
            config.log.format,
            redact=redact_keys,
            flush_interval=config.log.access_log_flush,
        ),
        recorder.record,
        RateLimiter(RedisRateCounts(redis.client)),  # the key cache's client and timeouts
        tokens,
    )
    return Gateway(
        config,
        db,
        hasher,
        lookup,
        recorder,
        sessions,
        upstreams,
        handler,
        secret=secret,
        tokens=tokens,
    )


def lifetimes(gw: Gateway) -> list[Callable[[web.Application], AsyncIterator[None]]]:
    """The worker's resources as cleanup_ctx generators, in start order (they close in
    reverse: flushes first, the stores last)."""

    async def stores(_: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await gw.db.close()
            gw.hasher.close()

    async def upstreams(_: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await close_upstreams(gw.upstreams)

    async def flushes(_: web.Application) -> AsyncIterator[None]:
        supervisor = Supervisor()
        supervisor.start("last-used", gw.recorder.run)
        supervisor.start(
            "metrics-flush", lambda: call_every(metrics.FLUSH_INTERVAL, metrics.flush_tallies)
        )
        if gw.lookup.redis is not None and gw.config.secret:  # dev's random secret: no check
            check = SecretCheck(
                gw.lookup.redis.client, gw.config.secret.encode(), secret_watch.EXPIRY
            )
            supervisor.start("secret-check", lambda: secret_watch.watch_secret(check))
        access_log = gw.handler.access_log
        if access_log.enabled and access_log.flush_interval:
            supervisor.start(
                "access-log-flush", lambda: call_every(access_log.flush_interval, access_log.flush)
            )
        try:
            yield
        finally:
            await supervisor.stop()
            metrics.flush_tallies()
            access_log.flush()
            try:
                await gw.recorder.flush()
            except Exception as exc:
                log.error(
                    "final last_used flush failed; %d stamps lost: %s",
                    len(gw.recorder),
                    type(exc).__name__,
                )

    if gw.tokens is not None:
        return [stores, gw.lookup.lifetime, gw.tokens.lifetime, upstreams, flushes]
    return [stores, gw.lookup.lifetime, upstreams, flushes]


async def call_every(seconds: float, action: Callable[[], None]) -> None:
    """Run `action` every `seconds` until cancelled (the metric and access-log flushes)."""
    while True:
        await asyncio.sleep(seconds)
        action()


def proxy_server(gw: Gateway) -> web.Server:
    return ProxyServer(draining_aware(gw.handler.handle, gw.readiness), gw.config.server)


def check_server(gw: Gateway) -> CheckServer:
    """The check listener (SPEC §12): the proxy listener's limits, its own lean server."""
    return CheckServer(CheckHandler(checker(gw), gw.config.server), gw.config.server, gw.readiness)


def checker(gw: Gateway) -> Checker:
    """Checks decide with the proxy's own Decider: one route table, key state and budget."""
    return Checker(gw.handler.decider, gw.config.server, gw.handler.access_log)


def draining_aware(handle: Handler, readiness: Readiness) -> Handler:
    """While draining, every answer closes its connection (`Connection: close` on answers
    not yet sent): keep-alive clients move to instances that stay, before this one stops
    accepting, instead of finding their idle connection closed under them."""

    async def handle_draining(request: web.BaseRequest) -> web.StreamResponse:
        response = await handle(request)
        if readiness.draining:
            response.force_close()  # streamed answers (already sent) close after the body
        return response

    return handle_draining


def admin_api_mode(config: Config) -> str | None:
    """Why the admin API may run ("token", "loopback"), or None when it must not."""
    if config.admin_token:
        return "token"
    host = config.listen.admin.rpartition(":")[0].strip("[]")
    if config.admin.allow_unauthenticated_loopback and host in ("127.0.0.1", "::1", "localhost"):
        return "loopback"
    return None


async def _no_version_banner(_: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "keygate"


def admin_app(gw: Gateway) -> web.Application:
    app = web.Application()
    app.on_response_prepare.append(_no_version_banner)
    mode = admin_api_mode(gw.config)
    if mode is None:
        log.warning(
            "admin API disabled: set KEYGATE_ADMIN_TOKEN (or admin.allow_unauthenticated_loopback"
            " with a loopback listen.admin); /healthz, /readyz and /metrics still answer"
        )
    else:
        service = KeyService(
            gw.db,
            gw.config.keys,
            gw.hasher,
            on_change=gw.lookup.key_changed,
            scope_catalogue=gw.config.scopes,
        )
        # Passwords are argon2id on the same small pool as key secrets (SecretHasher).
        people = PeopleService(gw.db, gw.hasher, gw.secret, gw.config.console)
        auth = AdminAuth(
            gw.config.admin_token,
            mode == "loopback",
            gw.lookup,
            gw.config.keys,
            people=people,
            public_url=gw.config.console.public_url,
        )
        app.add_subapp(
            "/admin/v1",
            admin_api(
                service,
                auth,
                gw.handler.access_log,
                people=people,
                invite_origin=public_origin(gw.config),
                tokens=TokenService(
                    gw.db,
                    issuer_names(gw.config),
                    publish=redis_publisher(gw.lookup.redis.client) if gw.lookup.redis else None,
                ),
            ),
        )
        if gw.config.console.enabled:
            # Imported here: a gateway with the console off never loads its templates.
            from gateway.console.app import console_app
            from gateway.console.sso import install_sso

            console = console_app(people, service, gw.config)
            install_sso(console, gw.config, people, secret=gw.secret)  # no-op without oidc
            app.add_subapp("/console", console)

    async def redis_ok() -> bool:
        return gw.lookup.redis is not None and await gw.lookup.redis.ping()

    async def metrics_endpoint(request: web.Request) -> web.Response:
        # keygate_store_up is what the stores answer now, asked by the worker scraped.
        postgres_up, redis_up = await asyncio.gather(gw.db.ping(), redis_ok())
        metrics.record_store_up("postgres", postgres_up)
        metrics.record_store_up("redis", redis_up)
        body, content_type = metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.add_routes(health_routes(gw.readiness, gw.db.ping, redis_ok))
    app.router.add_get("/metrics", metrics_endpoint)
    app.cleanup_ctx.extend(lifetimes(gw))
    return app
