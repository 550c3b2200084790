"""The shared Redis tier of the key cache, and change notifications between processes.

One Redis hash per key id, `keygate:key:<id>`:
  v  the row's version (bumped by every change in Postgres)
  s  the key's state as JSON: org, env, prefix, scopes, expiry, revoked, rate limit
     ([requests, seconds] or null; an entry without it is read as a miss, see
     state_from_json); no hash, no secret
  b.<fp>  the keyed verifier BLAKE2b-MAC(server secret, id:secret), once a gateway verified
          the key; <fp> fingerprints the server secret, so fleets with different secrets
          sharing one Redis never read each other's verifiers as wrong. (Earlier builds
          wrote HMAC-SHA-256 verifiers as h.<fp>: never read, they expire with the entry.)

Writes are version-checked in Lua so a cache fill that read Postgres before a change can
never overwrite the newer state the change wrote (a revoked key leaves a tombstone).
Every change is also published on `keygate:invalidate` as `<id>:<version>`, so gateways
evict their local copy and refuse older states from then on (a bare `<id>` from an older
build means "changed, version unknown").

The periodic re-sync (key_changes) is one gateway's job per interval, fleet-wide:
`keygate:resync:lease` (SET NX PX) elects it, and `keygate:resync:done` holds when the
last complete run began, on Redis's clock, so whoever runs next covers everything since.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import sys
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.keys.models import ApiKey
from gateway.keys.rate_limits import RateLimit
from gateway.keys.state import KeyState, shared_scopes
from gateway.store import redis_listen

if TYPE_CHECKING:
    from gateway.config import Config

log = logging.getLogger("keygate.cache")

CHANNEL = "keygate:invalidate"
_PREFIX = "keygate:key:"
_RESYNC_LEASE = "keygate:resync:lease"
_RESYNC_DONE = "keygate:resync:done"

# Store state only when not older than what is there; the verifier is per key id and the
# secret never changes for an id, so any writer may (re)set it.
_FILL = """
local cur = redis.call('HGET', KEYS[1], 'v')
if (not cur) or tonumber(cur) <= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2])
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], ARGV[5], ARGV[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


def state_to_json(state: KeyState) -> str:
    """The `s` field of a Redis entry."""
    return json.dumps(
        {
            "id": state.id,
            "org": state.org,
            "prefix": state.prefix,
            "env": state.env,
            "scopes": list(state.scopes),
            "expires_at": state.expires_at,
            "revoked": state.revoked,
            "version": state.version,
            "rate_limit": None
            if state.rate_limit is None
            else [state.rate_limit.requests, state.rate_limit.per],
        },
        separators=(",", ":"),
    )


def state_from_json(text: str | bytes) -> KeyState | None:
    """The state in an entry; None for one written by a build before rate limits."""
    d: dict[str, Any] = json.loads(text)
    # An older build writes entries without "rate_limit" at the same version as ours,
    # so reading one as "no limit" would leave a key's limit unenforced until the entry
    # expires (reads renew it). Read it as a miss instead: the key is read from
    # Postgres and the fill overwrites the entry (equal versions are overwritten).
    if "rate_limit" not in d:
        return None
    limit = d["rate_limit"]
    return KeyState(
        d["id"],
        sys.intern(d["org"]),  # shared by every cached key of the org (see shared_scopes)
        sys.intern(d["prefix"]),
        sys.intern(d["env"]),
        shared_scopes(tuple(d["scopes"])),
        d["expires_at"],
        bool(d["revoked"]),
        int(d["version"]),
        None if limit is None else RateLimit(int(limit[0]), int(limit[1])),
    )


def invalidation(key_id: str, version: int) -> str:
    """The message published on CHANNEL for a change: `<id>:<version>`."""
    return f"{key_id}:{version}"


def parse_invalidations(message: str) -> list[tuple[str, int | None]]:
    """(key id, version) of each change a message announces: PostgreSQL announces the
    keys a statement changed together, space-separated (migration 0007); Redis one."""
    return [parse_invalidation(part) for part in message.split()]


def parse_invalidation(message: str) -> tuple[str, int | None]:
    """(key id, version) of a message; version None for a bare id (builds before versions)."""
    key_id, sep, version = message.partition(":")
    if sep and version.isdigit():
        return key_id, int(version)
    return key_id, None


@dataclass(frozen=True)
class CachedEntry:
    state: KeyState
    verifier: bytes | None


class RedisKeyCache:
    """Reads and version-checked writes of key entries, plus invalidation pub/sub."""

    def __init__(self, client: aioredis.Redis, ttl: float, server_secret: bytes = b"") -> None:
        self.client = client
        self.ttl_ms = int(ttl * 1000)
        self.verifier_field = "b." + hashlib.sha256(b"keygate-fp:" + server_secret).hexdigest()[:12]
        self._fill = client.register_script(_FILL)

    @classmethod
    def connect(
        cls, url: str, ttl: float, timeout: float, server_secret: bytes = b""
    ) -> RedisKeyCache:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=10,
            retry_on_timeout=False,
            # One immediate retry: a pooled connection that died with a Redis restart is
            # replaced instead of failing the call; a timeout is never doubled.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        return cls(client, ttl, server_secret)

    async def get(self, key_id: str) -> CachedEntry | None:
        # Reading renews the entry: a key in steady use keeps its verifier in Redis, so the
        # fleet does not fall back to argon2 (and the wrong-secret limit) every TTL.
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(_PREFIX + key_id, ["s", self.verifier_field])
            pipe.pexpire(_PREFIX + key_id, self.ttl_ms)
            raw, _ = await pipe.execute()
        state = None if raw[0] is None else state_from_json(raw[0])
        if state is None:
            return None
        return CachedEntry(state, raw[1])

    async def put(self, state: KeyState, verifier: bytes | None) -> None:
        await self._fill(keys=[_PREFIX + state.id], args=self._fill_args(state, verifier))

    def _fill_args(self, state: KeyState, verifier: bytes | None) -> list[str | int | bytes]:
        return [
            state.version,
            state_to_json(state),
            verifier or b"",
            self.ttl_ms,
            self.verifier_field,
        ]

    async def put_many(self, states: Sequence[KeyState]) -> None:
        """`put` of each state (no verifier), in one round trip: the same version-checked
        script per key, pipelined (not a transaction: each entry stands alone)."""
        if not states:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for state in states:
                # Queued, not sent; the pipeline loads the script first should Redis have
                # lost it (a restart).
                await self._fill(
                    keys=[_PREFIX + state.id], args=self._fill_args(state, None), client=pipe
                )
            await pipe.execute()

    async def claim_resync(self, lease: float) -> tuple[float, float] | None:
        """Win the next periodic re-sync for `lease` seconds: (when it begins, seconds
        since the last complete one began, inf when none is recorded), both on Redis's
        clock; None when another gateway holds the lease."""
        won = await self.client.set(_RESYNC_LEASE, b"1", nx=True, px=max(1, int(lease * 1000)))
        if not won:
            return None
        seconds, micros = await self.client.time()
        began = seconds + micros / 1e6
        done = await self.client.get(_RESYNC_DONE)
        return began, math.inf if done is None else max(0.0, began - float(done))

    async def resync_done(self, began: float) -> None:
        """The run that began at `began` (from claim_resync) covered its window. Kept for
        the Redis TTL: older than that, the next run covers the whole TTL anyway."""
        await self.client.set(_RESYNC_DONE, repr(began), px=self.ttl_ms)

    async def key_changed(self, key: ApiKey) -> None:
        """Write the new state (never older than what is there) and tell every gateway."""
        await self.put(KeyState.of(key), None)
        await self.client.publish(CHANNEL, invalidation(key.id, key.version))

    async def subscribe(self) -> AsyncGenerator[str, None]:
        """Messages (`parse_invalidation`) as changes are published; "" once subscribed.

        Raises RedisError when the link drops."""
        async with contextlib.aclosing(redis_listen.messages(self.client, CHANNEL)) as messages:
            async for message in messages:
                yield message

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()


def redis_missed_change(exc: BaseException) -> str:
    """What to tell whoever made a change that could not be written to Redis."""
    return (
        f"Redis unreachable ({type(exc).__name__}): the change is durable in PostgreSQL;"
        " gateways hear it through PostgreSQL (LISTEN/NOTIFY) within 1 s, and repair"
        " Redis's entry"
    )


class KeyCacheWriter:
    """The CLI's side: publish changes when Redis is reachable, warn when it is not."""

    def __init__(self, cache: RedisKeyCache | None) -> None:
        self.cache = cache

    @classmethod
    def from_config(cls, config: Config) -> KeyCacheWriter:
        return cls(RedisKeyCache.connect(config.redis_url, config.cache.redis_ttl, timeout=2.0))

    async def key_changed(self, key: ApiKey) -> str | None:
        """Update Redis's entry and tell the gateways; a warning when Redis was not there."""
        if self.cache is None:
            return None
        try:
            await self.cache.key_changed(key)
        except (TimeoutError, RedisError, OSError) as exc:
            return redis_missed_change(exc)
        return None

    async def close(self) -> None:
        if self.cache is not None:
            await self.cache.close()
