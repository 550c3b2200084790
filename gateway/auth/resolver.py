"""Key resolution: in-process cache, then Redis, then Postgres, then one argon2 verify.

After the first successful verify, the key's keyed hash (BLAKE2b keyed by KEYGATE_SECRET)
is cached in every tier, so a request costs one keyed hash and one constant-time comparison.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from gateway.auth.errors import AuthUnavailable, InvalidKey
from gateway.auth.failures import FailureLimiter
from gateway.auth.local_cache import LocalKeyCache
from gateway.keys.errors import StoreUnavailable
from gateway.keys.format import BODY_LENGTH, ID_LENGTH, ParsedKey
from gateway.keys.hashing import (
    SecretHasher,
    TokenProofs,
    fast_verifier,
    same_verifier,
    verifier_key,
)
from gateway.observability import metrics
from gateway.store import queries
from gateway.store.db import Database
from gateway.store.key_cache import CachedEntry, KeyState, RedisKeyCache

log = logging.getLogger("keygate.auth")


class KeyResolver:
    def __init__(
        self,
        *,
        local: LocalKeyCache,
        redis: RedisKeyCache | None,
        db: Database,
        hasher: SecretHasher,
        server_secret: bytes,
        failures: FailureLimiter,
    ) -> None:
        self.local = local
        self.redis = redis
        self.db = db
        self.hasher = hasher
        self.verifier_key = verifier_key(server_secret)
        self.proofs = TokenProofs()
        self.failures = failures
        # False while the invalidation channel is down and until the re-sync after it is
        # back: an entry written before a change made meanwhile may be stale, so keys are
        # read from PostgreSQL instead (set by the change listener).
        self.redis_trusted = True
        # One argon2 verify per (key, candidate) at a time: a cold burst waits on it.
        self._in_flight: dict[bytes, asyncio.Future[KeyState]] = {}

    def proven(self, presented: str) -> KeyState | None:
        """The cached state of a key this process has already checked whole, else None.

        `presented` is recognised by its proof (TokenProofs) alone: the very string whose
        format, checksum, env, prefix and secret passed every check before (`remember`).
        No parsing, no I/O; None sends the request down the full path (`cached`, `resolve`).
        """
        # [_ID_START:_ID_END] is where a well-formed key holds its id.
        state = self.local.proven(presented[_ID_START:_ID_END], self.proofs.of(presented))
        if state is not None:
            metrics.KEY_CACHE.add(metrics.LOCAL_HIT)
        return state

    def remember(self, presented: str, state: KeyState) -> None:
        """Record that `presented` is the right key for `state` (it just passed every check)."""
        self.local.put_proof(state.id, self.proofs.of(presented))

    def cached(self, parsed: ParsedKey) -> KeyState | None:
        """The key's state from the in-process cache alone, when that settles it (no I/O).

        Raises InvalidKey for a secret that does not match the cached verifier; None means
        `resolve` must decide (and count the lookup).
        """
        entry = self.local.get(parsed.key_id)
        if entry is None or entry.verifier is None or entry.state is None:
            return None
        metrics.KEY_CACHE.add(metrics.LOCAL_HIT)
        verifier = fast_verifier(self.verifier_key, parsed.key_id, parsed.secret)
        return _checked(entry.state, entry.verifier, verifier, parsed)

    async def resolve(self, parsed: ParsedKey, client: str | None = None) -> KeyState:
        """The state of the key whose secret was presented; raise InvalidKey/AuthUnavailable.

        `client` (the peer address) scopes the wrong-secret limit.
        """
        verifier = fast_verifier(self.verifier_key, parsed.key_id, parsed.secret)
        entry = self.local.get(parsed.key_id)
        if entry is not None:
            metrics.KEY_CACHE.add(metrics.LOCAL_HIT)
            if entry.state is None:
                raise InvalidKey()
            if entry.verifier is not None:
                return _checked(entry.state, entry.verifier, verifier, parsed)
        else:
            metrics.LOCAL_MISS.inc()
        if entry is None or entry.verifier is None:
            # Another gateway may have verified the key meanwhile: its verifier is in Redis.
            cached = await self._from_redis(parsed.key_id)
            if cached is not None and cached.verifier is not None:
                self.local.put(parsed.key_id, cached.state, cached.verifier)
                return _checked(cached.state, cached.verifier, verifier, parsed)
        pending = self._in_flight.get(verifier)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyState] = asyncio.get_running_loop().create_future()
        self._in_flight[verifier] = future
        try:
            state = await self._verify_from_store(parsed, verifier, client)
            future.set_result(state)
            return state
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            del self._in_flight[verifier]

    async def _from_redis(self, key_id: str) -> CachedEntry | None:
        if self.redis is None or not self.redis_trusted:
            return None
        try:
            cached = await self.redis.get(key_id)
        except (TimeoutError, RedisError, OSError):
            metrics.REDIS_ERRORS.inc()
            return None
        (metrics.REDIS_HIT if cached is not None else metrics.REDIS_MISS).inc()
        return cached

    async def _verify_from_store(
        self, parsed: ParsedKey, verifier: bytes, client: str | None
    ) -> KeyState:
        entry = self.local.get(parsed.key_id)
        if entry is not None and entry.state is not None and entry.secret_hash is not None:
            state, secret_hash = entry.state, entry.secret_hash
        else:
            try:
                async with self.db.connection() as conn:
                    row = await queries.get_key(conn, parsed.key_id)
            except StoreUnavailable:
                metrics.POSTGRES_ERRORS.inc()
                raise AuthUnavailable() from None
            if row is None:
                metrics.POSTGRES_MISS.inc()
                self.local.put(parsed.key_id, None)
                raise InvalidKey()
            metrics.POSTGRES_HIT.inc()
            state, secret_hash = KeyState.of(row), row.secret_hash
        known = self.local.known_verifier(parsed.key_id)
        if known is not None:
            # Verified before: only the state needed refreshing; no argon2.
            if not same_verifier(known, verifier):
                raise InvalidKey()
            self.local.put(parsed.key_id, state, known)
            await self._fill_redis(state, known)
            return _checked(state, known, verifier, parsed)
        if self.failures.blocked(parsed.key_id, client):
            metrics.key_verifications.labels("throttled").inc()
            raise InvalidKey()
        started = time.perf_counter()
        ok = await self.hasher.verify_async(secret_hash, parsed.secret)
        metrics.key_verification_duration.observe(time.perf_counter() - started)
        metrics.key_verifications.labels("valid" if ok else "invalid").inc()
        if not ok:
            self.failures.record_failure(parsed.key_id, client)
            current = self.local.get(parsed.key_id)
            # A right secret verified meanwhile stays known: dropping its verifier would
            # send valid requests back to argon2, which the failures just blocked.
            if current is None or current.verifier is None:
                self.local.put(parsed.key_id, state, None, secret_hash)
            raise InvalidKey()
        self.local.put(parsed.key_id, state, verifier)
        await self._fill_redis(state, verifier)
        return _checked(state, verifier, verifier, parsed)

    async def _fill_redis(self, state: KeyState, verifier: bytes) -> None:
        if self.redis is None or not self.redis_trusted:  # likely down: spare the timeout
            return
        try:
            await self.redis.put(state, verifier)
        except (TimeoutError, RedisError, OSError):
            metrics.REDIS_ERRORS.inc()

    def evict(self, key_id: str) -> None:
        self.local.evict(key_id)


_ID_START = -BODY_LENGTH
_ID_END = -BODY_LENGTH + ID_LENGTH


def _checked(state: KeyState, known: bytes, presented: bytes, parsed: ParsedKey) -> KeyState:
    if not same_verifier(known, presented) or state.prefix != parsed.prefix:
        raise InvalidKey()
    return state
