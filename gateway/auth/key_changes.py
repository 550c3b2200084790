"""The background side of key lookup: hearing about changes, repairing Redis, and
re-checking open WebSocket sessions. Each loop runs under the lookup's Supervisor.

- `listen`: evicts keys changed anywhere (Redis pub/sub, `<id>:<version>`), and while
  the channel is down keeps local entries short and Redis untrusted, until a re-sync.
- `resync_recent_changes`: writes every key changed within the Redis TTL into Redis.
- `watch_sessions`: closes sessions whose key expired, and re-checks every session's key
  while the channel is down (from PostgreSQL, at most once per DEGRADED_LOCAL_TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway.keys.errors import StoreUnavailable
from gateway.keys.state import KeyState
from gateway.store import queries
from gateway.store.key_cache import parse_invalidation

if TYPE_CHECKING:
    from gateway.auth.key_lookup import KeyLookup

log = logging.getLogger("keygate.auth")
# While the invalidation channel is down, local entries live at most this long.
DEGRADED_LOCAL_TTL = 1.0
# Reconnecting is one cheap attempt per worker: keep the recovery after an outage short.
MAX_RECONNECT_BACKOFF = 1.0
# What a store outage raises; anything else escaping a loop is a bug, for the supervisor.
STORE_DOWN = (TimeoutError, RedisError, OSError, StoreUnavailable)


async def listen(lookup: KeyLookup) -> None:
    """Evict keys changed anywhere; while the channel is down, keep local entries short."""
    assert lookup.redis is not None
    configured = lookup.cache_config.local_ttl
    local = lookup.local
    backoff = 0.1
    while True:
        try:
            # Closed here, by this task, even when it is cancelled mid-loop: left to the
            # event loop's generator finaliser, the subscription would be torn down during
            # interpreter shutdown, talking to Redis after the loop stopped serving.
            async with contextlib.aclosing(lookup.redis.subscribe()) as messages:
                async for message in messages:
                    if not message:  # (re)subscribed: whatever was missed meanwhile is dropped
                        recovering = local.ttl != configured
                        if recovering:
                            local.clear()
                        repaired = await resync_recent_changes(lookup)  # raises if Redis fails
                        if recovering:
                            log.warning("invalidation channel back; %s recently changed keys "
                                        "re-synced into Redis", repaired)
                        local.ttl = configured
                        lookup.redis_trusted = True
                        backoff = 0.1
                        continue
                    key_id, version = parse_invalidation(message)
                    lookup.changed(key_id, version)
                    await lookup.enforce_sessions(key_id)
        except BaseException as exc:
            # Whatever ended the subscription, entries may now miss changes: degrade first.
            if local.ttl == configured:
                if isinstance(exc, Exception):
                    log.warning("invalidation channel lost (%s); local TTL shortened",
                                type(exc).__name__)
                # Entries cached so far would otherwise live their full TTL unannounced;
                # known verifiers survive, so refilling costs a Postgres read, not argon2.
                local.clear()
            local.ttl = min(configured, DEGRADED_LOCAL_TTL)
            lookup.redis_trusted = False  # until re-synced: entries may be stale
            if not isinstance(exc, STORE_DOWN):
                raise  # cancelled, or a bug: the supervisor logs, counts and restarts it
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_RECONNECT_BACKOFF)


async def resync_recent_changes(lookup: KeyLookup) -> int | None:
    """Write the state of every key changed within the Redis TTL into Redis.

    A change made while Redis was unreachable (its writer could not update the entry nor
    publish) would otherwise linger in a stale Redis entry until it expired; no entry is
    older than the Redis TTL, so re-syncing that window repairs every one of them.

    Returns how many keys were re-synced, or None when Postgres is unreachable (Redis is
    then the best knowledge there is). A Redis failure raises: Redis must not be trusted
    before its entries are repaired (a restarted Redis may still be loading, say).
    """
    assert lookup.redis is not None
    try:
        async with lookup.db.connection() as conn:
            changed = await queries.keys_changed_within(conn, lookup.cache_config.redis_ttl)
    except StoreUnavailable as exc:
        log.warning("re-sync of recently changed keys skipped: %s", exc)
        return None
    for key in changed:
        await lookup.redis.put(KeyState.of(key), None)  # version-checked: never older
        lookup.changed(key.id, key.version)
    return len(changed)


async def resync_periodically(lookup: KeyLookup, interval: float = 30.0) -> None:
    """Also repair entries whose writer's Redis call failed while Redis stayed up."""
    while True:
        await asyncio.sleep(interval)
        try:
            await resync_recent_changes(lookup)
        except STORE_DOWN as exc:
            log.warning("periodic re-sync failed: %s", type(exc).__name__)


async def watch_sessions(lookup: KeyLookup, interval: float = 0.25) -> None:
    """Close sessions whose key expired; while the channel is degraded, re-check every
    session's key from PostgreSQL (at most once per DEGRADED_LOCAL_TTL)."""
    assert lookup.sessions is not None
    checked = 0.0
    while True:
        await asyncio.sleep(interval)
        if not lookup.redis_trusted and time.monotonic() - checked < DEGRADED_LOCAL_TTL:
            continue
        checked = time.monotonic()
        for key_id in lookup.sessions.keys():  # noqa: SIM118 - a list copy: sessions end
            await lookup.enforce_sessions(key_id)
