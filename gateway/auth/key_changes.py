"""The background side of key lookup: hearing about changes, repairing Redis, and
re-checking open WebSocket sessions. Each loop runs under the lookup's Supervisor.

Two invalidation channels carry every change as `<id>:<version>`, with the same version
rules: Redis pub/sub (published by whoever made the change, when it reaches Redis) and
PostgreSQL `LISTEN`/`NOTIFY` (announced by PostgreSQL itself on commit, migration 0004;
per statement since 0007: the keys one statement changed, space-separated).

- `listen_redis`, `listen_postgres`: evict keys changed anywhere. A channel that
  (re)connects first re-syncs what changed while it was away. While either is live and
  re-synced, every change is heard: local entries live until invalidated, up to
  cache.max_age (refreshed in the background before then). While NEITHER channel is
  live, nothing would tell this process of a change: local entries are dropped and then
  live at most DEGRADED_LOCAL_TTL. Redis is not trusted while its own channel is down and
  until its re-sync (a change made meanwhile may have missed its entry). New keys are
  announced by PostgreSQL alone (migration 0007), so gaps of unknown ids (`unknown_ids`)
  live cache.unknown_ttl only while its channel is live, and are dropped when it is lost.
- `resync_recent_changes`: writes every key changed within the Redis TTL into Redis;
  `resync_periodically` repeats it for recent changes, one gateway of the fleet per run.
- `watch_sessions`: closes sessions whose key expired, and re-checks every session's key
  (from PostgreSQL, at most once per DEGRADED_LOCAL_TTL, while Redis is untrusted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway.keys.errors import StoreUnavailable
from gateway.keys.models import ApiKey
from gateway.keys.state import KeyState
from gateway.store import queries
from gateway.store.key_cache import RedisKeyCache, parse_invalidations
from gateway.store.key_notifications import key_notifications

if TYPE_CHECKING:
    from gateway.auth.key_lookup import KeyLookup

log = logging.getLogger("keygate.auth")
# While no invalidation channel is live, local entries live at most this long.
DEGRADED_LOCAL_TTL = 1.0
# Reconnecting is one cheap attempt per worker: keep the recovery after an outage short.
MAX_RECONNECT_BACKOFF = 1.0
# What a store outage raises; anything else escaping a loop is a bug, for the supervisor.
STORE_DOWN = (TimeoutError, RedisError, OSError, StoreUnavailable)

REDIS = "redis"
POSTGRES = "postgres"
# Changes heard in a burst are applied in slices of at most about this many seconds.
SLICE = 0.002
# A re-sync reads this many changed keys per query and writes them in one Redis pipeline.
RESYNC_BATCH = 1000


async def listen_redis(lookup: KeyLookup) -> None:
    """The Redis pub/sub channel; once re-synced, Redis entries are trusted again."""
    assert lookup.redis is not None
    redis = lookup.redis

    async def resync() -> int | None:
        return await resync_recent_changes(lookup)  # raises if Redis fails: stay untrusted

    await _listen(lookup, REDIS, redis.subscribe, resync)


async def listen_postgres(lookup: KeyLookup) -> None:
    """The PostgreSQL LISTEN channel: hears every committed change, whoever made it."""

    async def resync() -> int:
        count = 0
        async with contextlib.aclosing(_changed_pages(lookup)) as pages:
            async for page in pages:  # a page at a time: memory stays bounded
                for key in page:
                    lookup.changed(key.id, key.version)
                await _repair_redis(lookup, page)
                count += len(page)
        return count

    await _listen(lookup, POSTGRES, lambda: key_notifications(lookup.db), resync)


async def _listen(
    lookup: KeyLookup,
    channel: str,
    subscribe: Callable[[], AsyncGenerator[str, None]],
    resync: Callable[[], Awaitable[int | None]],
) -> None:
    """Hear `channel` for as long as the worker runs, reconnecting with backoff."""
    backoff = 0.1
    slice_ends = 0.0
    while True:
        try:
            # Closed here, by this task, even when it is cancelled mid-loop: left to the
            # event loop's generator finaliser, the subscription would be torn down during
            # interpreter shutdown, talking to the store after the loop stopped serving.
            async with contextlib.aclosing(subscribe()) as messages:
                async for message in messages:
                    if not message:  # (re)subscribed: what was missed meanwhile is re-synced
                        uncovered = not lookup.channels
                        if uncovered:
                            lookup.local.clear()  # nothing heard changes: drop every entry
                        repaired = await resync()
                        if channel in lookup.lost:
                            lookup.lost.discard(channel)
                            log.warning(
                                "%s invalidation channel back; %s recently changed keys re-synced",
                                channel,
                                repaired,
                            )
                        lookup.channels.add(channel)
                        # Changes are heard now: entries live until invalidated, up to
                        # max_age (refreshed in the background before then).
                        lookup.local.ttl = lookup.cache_config.max_age
                        if channel == POSTGRES:  # the one channel that announces new keys
                            lookup.unknown.clear()
                            lookup.unknown.ttl = lookup.cache_config.unknown_ttl
                        if channel == REDIS:
                            lookup.redis_trusted = True
                        backoff = 0.1
                        continue
                    for key_id, version in parse_invalidations(message):
                        if lookup.changed(key_id, version):
                            await lookup.enforce_sessions(key_id)
                        if time.monotonic() >= slice_ends:
                            # A burst (a statement that changed thousands of keys): let
                            # requests run between slices of this work.
                            await asyncio.sleep(0)
                            slice_ends = time.monotonic() + SLICE
        except BaseException as exc:
            _lost(lookup, channel, exc)
            if not isinstance(exc, STORE_DOWN):
                raise  # cancelled, or a bug: the supervisor logs, counts and restarts it
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_RECONNECT_BACKOFF)


def _lost(lookup: KeyLookup, channel: str, exc: BaseException) -> None:
    """`channel` is down: whatever it would have said is missed from now on."""
    if channel == REDIS:
        lookup.redis_trusted = False  # until re-synced: entries may be stale
    was_live = channel in lookup.channels
    lookup.channels.discard(channel)
    if was_live and isinstance(exc, Exception):
        lookup.lost.add(channel)
        log.warning(
            "%s invalidation channel lost (%s)%s",
            channel,
            type(exc).__name__,
            "" if lookup.channels else "; no channel left: local TTL shortened",
        )
    if not lookup.channels:
        if was_live:
            # Entries cached so far would otherwise live their full TTL unannounced;
            # known verifiers survive, so refilling costs a store read, not argon2.
            lookup.local.clear()
        lookup.local.ttl = min(lookup.cache_config.local_ttl, DEGRADED_LOCAL_TTL)
    if channel == POSTGRES:
        # Only PostgreSQL announces new keys (its insert trigger; creating a key publishes
        # nothing on Redis): without it, a key created in a cached gap would go unheard.
        lookup.unknown.clear()
        lookup.unknown.ttl = min(lookup.cache_config.unknown_ttl, DEGRADED_LOCAL_TTL)


async def _changed_pages(
    lookup: KeyLookup, window: float | None = None
) -> AsyncGenerator[list[ApiKey], None]:
    """Keys changed within `window` seconds (default: the Redis TTL, which no Redis entry
    is older than), RESYNC_BATCH at a time: bounded queries, each on a pooled connection
    only while it runs; raises StoreUnavailable. The window is fixed by the first query,
    so every page reads it."""
    seconds = lookup.cache_config.redis_ttl if window is None else window
    async with lookup.db.connection() as conn:
        since = await queries.changed_since(conn, seconds)
    after = ""
    while True:
        async with lookup.db.connection() as conn:
            page = await queries.keys_changed_since(conn, since, after, RESYNC_BATCH)
        if page:
            yield page
        if len(page) < RESYNC_BATCH:
            return
        after = page[-1].id


async def _recent_changes(lookup: KeyLookup) -> list[ApiKey]:
    """Keys changed within the Redis TTL (no Redis entry is older); raises StoreUnavailable."""
    return [key async for page in _changed_pages(lookup) for key in page]


async def _repair_redis(lookup: KeyLookup, changed: list[ApiKey]) -> None:
    """Best effort: write these states into Redis (version-checked), for the other
    gateways, RESYNC_BATCH per round trip; given up at the first failure (Redis's own
    re-sync repairs it later)."""
    if lookup.redis is None or not lookup.redis_trusted:
        return
    try:
        for start in range(0, len(changed), RESYNC_BATCH):
            batch = changed[start : start + RESYNC_BATCH]
            await lookup.redis.put_many([KeyState.of(key) for key in batch])
    except (TimeoutError, RedisError, OSError) as exc:
        log.warning("Redis repair after a PostgreSQL re-sync stopped: %s", type(exc).__name__)


async def resync_recent_changes(lookup: KeyLookup, window: float | None = None) -> int | None:
    """Write the state of every key changed within the Redis TTL into Redis.

    A change made while Redis was unreachable (its writer could not update the entry nor
    publish) would otherwise linger in a stale Redis entry until it expired; no entry is
    older than the Redis TTL, so re-syncing that window repairs every one of them.

    Returns how many keys were re-synced, or None when Postgres is unreachable (Redis is
    then the best knowledge there is). A Redis failure raises: Redis must not be trusted
    before its entries are repaired (a restarted Redis may still be loading, say).
    """
    assert lookup.redis is not None
    count = 0
    try:
        # A page at a time, read and written: memory and each query stay bounded.
        async with contextlib.aclosing(_changed_pages(lookup, window)) as pages:
            async for page in pages:
                # Version-checked: never older. One round trip per page.
                await lookup.redis.put_many([KeyState.of(key) for key in page])
                for key in page:
                    lookup.changed(key.id, key.version)
                count += len(page)
    except StoreUnavailable as exc:
        log.warning("re-sync of recently changed keys skipped: %s", exc)
        return None
    return count


async def resync_periodically(
    lookup: KeyLookup, redis: RedisKeyCache, interval: float = 30.0
) -> None:
    """Also repair entries whose writer's Redis call failed while Redis stayed up.

    One gateway of the fleet does each run (a Redis lease, held for most of an interval,
    elects it), not every worker of every instance: the repair writes the same entries
    into the same Redis whoever does it, and a bulk change of many keys would otherwise
    cost each worker their full re-sync at once. The winner reads only what changed
    since the last complete run began (plus an interval of margin; the whole Redis TTL
    at most): the channels' (re)connects already re-synced the whole TTL, so with many
    recently changed keys a run costs their changes, not all."""
    while True:
        await asyncio.sleep(interval)
        try:
            claim = await redis.claim_resync(lease=0.9 * interval)
            if claim is None:
                continue  # another gateway runs this one
            began, since_done = claim
            window = min(lookup.cache_config.redis_ttl, since_done + interval)
            if await resync_recent_changes(lookup, window) is not None:
                await redis.resync_done(began)
        except STORE_DOWN as exc:
            log.warning("periodic re-sync failed: %s", type(exc).__name__)


async def watch_sessions(lookup: KeyLookup, interval: float = 0.25) -> None:
    """Close sessions whose key expired (and re-check every session's key); while Redis
    is untrusted, from PostgreSQL at most once per DEGRADED_LOCAL_TTL."""
    assert lookup.sessions is not None
    checked = 0.0
    while True:
        await asyncio.sleep(interval)
        if not lookup.redis_trusted and time.monotonic() - checked < DEGRADED_LOCAL_TTL:
            continue
        checked = time.monotonic()
        for key_id in lookup.sessions.keys():  # noqa: SIM118 - a list copy: sessions end
            await lookup.enforce_sessions(key_id)
