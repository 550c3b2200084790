"""Composition root: builds one worker's proxy and admin servers and owns their lifetimes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from gateway.admin.api import admin_api
from gateway.admin.health import health_routes
from gateway.admin.principals import AdminAuth
from gateway.auth.failures import FailureLimiter
from gateway.auth.last_used import LastUsedRecorder
from gateway.auth.local_cache import LocalKeyCache
from gateway.auth.resolver import KeyResolver
from gateway.config import Config, RouteConfig
from gateway.keys.errors import StoreUnavailable
from gateway.keys.format import redact_keys
from gateway.keys.hashing import SecretHasher
from gateway.keys.models import ApiKey
from gateway.keys.service import KeyService
from gateway.observability import metrics
from gateway.observability.access_log import AccessLog
from gateway.proxy.handler import ProxyHandler
from gateway.proxy.listener import ProxyServer
from gateway.proxy.rate_limiter import RateLimiter
from gateway.proxy.routes import RouteTable
from gateway.proxy.upstreams import Upstream, close_upstreams, open_upstreams
from gateway.proxy.websocket import WebSocketSessions
from gateway.store import queries
from gateway.store.db import Database
from gateway.store.key_cache import KeyState, RedisKeyCache
from gateway.store.rate_counts import RedisRateCounts

log = logging.getLogger("keygate")
# While the invalidation channel is down, local entries live at most this long.
DEGRADED_LOCAL_TTL = 1.0
# Reconnecting is one cheap attempt per worker: keep the recovery after an outage short.
MAX_RECONNECT_BACKOFF = 1.0


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
    redis: RedisKeyCache
    hasher: SecretHasher
    local: LocalKeyCache
    resolver: KeyResolver
    recorder: LastUsedRecorder
    sessions: WebSocketSessions
    upstreams: dict[str, Upstream]
    handler: ProxyHandler
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def build_gateway(config: Config, secret: bytes) -> Gateway:
    timeout = config.server.store_timeout
    db = Database(config.database_url, timeout=timeout, max_size=10)
    redis = RedisKeyCache.connect(config.redis_url, config.cache.redis_ttl, timeout, secret)
    hasher = SecretHasher(config.keys.argon2, threads=config.keys.verify_threads)
    local = LocalKeyCache(config.cache.local_ttl, config.cache.max_entries)
    resolver = KeyResolver(
        local=local, redis=redis, db=db, hasher=hasher, server_secret=secret,
        failures=FailureLimiter(config.cache.failed_ttl, config.cache.max_failures_per_key),
    )
    recorder = LastUsedRecorder(db, config.last_used.flush_interval, config.last_used.max_pending)
    sessions = WebSocketSessions()
    upstreams = open_upstreams(config.upstreams)
    routes: RouteTable[RouteConfig] = RouteTable.compile(config.routes)
    handler = ProxyHandler(
        config, routes, resolver, upstreams, sessions,
        AccessLog(config.log.access_log, config.log.format, redact=redact_keys,
                  flush_interval=config.log.access_log_flush),
        recorder.record,
        RateLimiter(RedisRateCounts(redis.client)),  # the key cache's client and timeouts
    )
    return Gateway(
        config, db, redis, hasher, local, resolver, recorder, sessions, upstreams, handler
    )


async def start_background(gw: Gateway) -> None:
    gw.tasks.append(asyncio.create_task(gw.recorder.run(), name="last-used"))
    gw.tasks.append(asyncio.create_task(listen_for_changes(gw), name="invalidations"))
    gw.tasks.append(asyncio.create_task(watch_websocket_keys(gw), name="ws-expiry"))
    gw.tasks.append(asyncio.create_task(resync_periodically(gw), name="resync"))
    gw.tasks.append(asyncio.create_task(
        call_every(metrics.FLUSH_INTERVAL, metrics.flush_tallies), name="metrics-flush"))
    access_log = gw.handler.access_log
    if access_log.enabled and access_log.flush_interval:
        gw.tasks.append(asyncio.create_task(
            call_every(access_log.flush_interval, access_log.flush), name="access-log-flush"))


async def stop_gateway(gw: Gateway) -> None:
    for task in gw.tasks:
        task.cancel()
    for task in gw.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    metrics.flush_tallies()
    gw.handler.access_log.flush()
    try:
        await gw.recorder.flush()
    except Exception as exc:
        log.error("final last_used flush failed; %d stamps lost: %s", len(gw.recorder), exc)
    await close_upstreams(gw.upstreams)
    await gw.redis.close()
    await gw.db.close()
    gw.hasher.close()


async def call_every(seconds: float, action: Callable[[], None]) -> None:
    """Run `action` every `seconds` until cancelled (the metric and access-log flushes)."""
    while True:
        await asyncio.sleep(seconds)
        action()


async def listen_for_changes(gw: Gateway) -> None:
    """Evict keys changed anywhere; while the channel is down, keep local entries short."""
    configured = gw.local.ttl
    backoff = 0.1
    while True:
        try:
            async for key_id in gw.redis.subscribe():
                if not key_id:  # (re)subscribed: whatever was missed meanwhile is dropped
                    recovering = gw.local.ttl != configured
                    if recovering:
                        gw.local.clear()
                    repaired = await resync_recent_changes(gw)  # raises if Redis fails
                    if recovering:
                        log.warning("invalidation channel back; %s recently changed keys "
                                    "re-synced into Redis", repaired)
                    gw.local.ttl = configured
                    gw.resolver.redis_trusted = True
                    backoff = 0.1
                    continue
                gw.local.evict(key_id)
                if key_id in gw.sessions.keys():  # noqa: SIM118 - not a dict: a list copy
                    await close_if_refused(gw, key_id)
        except Exception as exc:  # never let the listener die: it is the freshness guarantee
            if gw.local.ttl == configured:
                log.warning(
                    "invalidation channel lost (%s); local TTL shortened", type(exc).__name__
                )
                # Entries cached so far would otherwise live their full TTL unannounced;
                # known verifiers survive, so refilling costs a Postgres read, not argon2.
                gw.local.clear()
            gw.local.ttl = min(configured, DEGRADED_LOCAL_TTL)
            gw.resolver.redis_trusted = False  # until re-synced: entries may be stale
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_RECONNECT_BACKOFF)


async def resync_recent_changes(gw: Gateway) -> int | None:
    """Write the state of every key changed within the Redis TTL into Redis.

    A change made while Redis was unreachable (its writer could not update the entry nor
    publish) would otherwise linger in a stale Redis entry until it expired; no entry is
    older than the Redis TTL, so re-syncing that window repairs every one of them.

    Returns how many keys were re-synced, or None when Postgres is unreachable (Redis is
    then the best knowledge there is). A Redis failure raises: Redis must not be trusted
    before its entries are repaired (a restarted Redis may still be loading, say).
    """
    try:
        async with gw.db.connection() as conn:
            changed = await queries.keys_changed_within(conn, gw.config.cache.redis_ttl)
    except StoreUnavailable as exc:
        log.warning("re-sync of recently changed keys skipped: %s", exc)
        return None
    for key in changed:
        await gw.redis.put(KeyState.of(key), None)
        gw.local.evict(key.id)
    return len(changed)


async def resync_periodically(gw: Gateway, interval: float = 30.0) -> None:
    """Also repair entries whose writer's Redis call failed while Redis stayed up."""
    while True:
        await asyncio.sleep(interval)
        try:
            await resync_recent_changes(gw)
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("periodic re-sync failed: %s", type(exc).__name__)


async def session_key_state(gw: Gateway, key_id: str) -> KeyState | None:
    """A key's current state for its open sessions: from Redis, or from PostgreSQL while
    Redis is unreachable or not re-synced (a revocation made meanwhile is only there)."""
    if gw.resolver.redis_trusted:
        try:
            entry = await gw.redis.get(key_id)
        except (TimeoutError, RedisError, OSError):
            pass
        else:
            return entry.state if entry is not None else None
    try:
        async with gw.db.connection() as conn:
            row = await queries.get_key(conn, key_id)
    except StoreUnavailable:
        return None
    return KeyState.of(row) if row is not None else None


async def close_if_refused(gw: Gateway, key_id: str) -> None:
    state = await session_key_state(gw, key_id)
    if state is None:
        return
    if state.revoked:
        await gw.sessions.close_key(key_id, "API key revoked")
    elif state.expires_at is not None and state.expires_at <= time.time():
        await gw.sessions.close_key(key_id, "API key expired")


async def watch_websocket_keys(gw: Gateway, interval: float = 0.25) -> None:
    """Close sessions whose key expired, and re-check keys when the channel is degraded
    (then from PostgreSQL, at most once per DEGRADED_LOCAL_TTL)."""
    checked = 0.0
    while True:
        await asyncio.sleep(interval)
        if not gw.resolver.redis_trusted and time.monotonic() - checked < DEGRADED_LOCAL_TTL:
            continue
        checked = time.monotonic()
        for key_id in gw.sessions.keys():  # noqa: SIM118 - not a dict: a list copy
            await close_if_refused(gw, key_id)


def proxy_server(gw: Gateway) -> web.Server:
    return ProxyServer(gw.handler.handle, handler_cancellation=True, access_log=None)


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
        async def key_changed(key: ApiKey) -> None:
            gw.local.evict(key.id)
            await gw.redis.key_changed(key)

        service = KeyService(gw.db, gw.config.keys, gw.hasher, on_change=key_changed)
        auth = AdminAuth(gw.config.admin_token, mode == "loopback", gw.resolver, gw.config.keys)
        app.add_subapp("/admin/v1", admin_api(service, auth))

    async def redis_ok() -> bool:
        return await gw.redis.ping()

    async def metrics_endpoint(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.add_routes(health_routes(gw.db.ping, redis_ok))
    app.router.add_get("/metrics", metrics_endpoint)
    return app
