"""Who is calling: one component owns key lookup whole, behind `identify()`.

Tiers: this process's cache (and its ranges of ids known to hold no key, `unknown_ids`,
checked before any store), then Redis, then Postgres, then (for a secret never seen
right before) one argon2 verify on a fair, bounded queue. After that a request costs one
keyed hash and one constant-time comparison. The component also owns what keeps the tiers
honest: versions and tickets (no tier is ever handed an older state than it knows, see
`local_cache`), whether Redis may be trusted (not while its invalidation channel is down
and until it is re-synced), the invalidation listener, the periodic re-sync, and the
re-authorisation of open WebSocket sessions when their key changes (`key_changes`).

Its resources (Redis client, background tasks, verifies in flight) live in `lifetime`, an
aiohttp cleanup_ctx generator; the caller only wires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from multidict import CIMultiDictProxy
from redis.exceptions import RedisError

from gateway.auth import key_changes
from gateway.auth.authenticate import check_status, parse_presented
from gateway.auth.credentials import read_credential
from gateway.auth.errors import AuthUnavailable, InvalidKey, MissingKey, TooManyAttempts
from gateway.auth.failures import FailureLimiter, Reservation
from gateway.auth.local_cache import LocalKeyCache, Ticket
from gateway.auth.unknown_ids import UnknownIds
from gateway.auth.verify_queue import FairVerifier, VerifyQueueFull
from gateway.config import CacheConfig, KeysConfig
from gateway.keys.errors import StoreUnavailable
from gateway.keys.format import BODY_LENGTH, ID_LENGTH, ParsedKey
from gateway.keys.hashing import (
    SecretHasher,
    TokenProofs,
    fast_verifier,
    same_verifier,
    verifier_key,
)
from gateway.keys.models import ApiKey
from gateway.keys.state import KeyState
from gateway.observability import metrics
from gateway.store import queries
from gateway.store.db import Database
from gateway.store.key_cache import CachedEntry, RedisKeyCache, redis_missed_change
from gateway.supervisor import Supervisor

# Awaited with the key id right after a Redis read ("redis"), right after a Postgres read
# ("postgres") and just before an argon2 verify ("verify"): a test passes a barrier here
# to hold a lookup mid-flight with what it read. Production passes nothing.
Checkpoint = Callable[[str, str], Awaitable[None]]
# A lookup whose result was outdated by an invalidation while it ran reads again, at most
# this many times in all (then 503: the key is changing faster than it can be read).
_ATTEMPTS = 3


class OpenSessions(Protocol):
    """The proxy's WebSocket registry (gateway.proxy.ws_sessions), as lookup needs it:
    named here because auth must not import proxy."""

    def keys(self) -> list[str]: ...

    def __contains__(self, key_id: object) -> bool: ...

    async def enforce(self, state: KeyState, now: float) -> int: ...


class KeyLookup:
    def __init__(
        self,
        *,
        keys: KeysConfig,
        cache: CacheConfig,
        db: Database,
        redis: RedisKeyCache | None,
        hasher: SecretHasher,
        server_secret: bytes,
        sessions: OpenSessions | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        checkpoint: Checkpoint | None = None,
        on_verify_start: Callable[[str], None] | None = None,
    ) -> None:
        self.keys = keys
        self.cache_config = cache
        self.db = db
        self.redis = redis
        self.sessions = sessions
        self.clock = clock  # wall clock: expiry
        self.monotonic = monotonic  # TTLs and windows
        self.checkpoint = checkpoint
        self.local = LocalKeyCache(
            cache.local_ttl, cache.max_entries, clock=monotonic, on_refresh_due=self._refresh_due
        )
        # Unknown ids, as gaps between known ones: refused before any store read. As many
        # gaps as keys cached (N keys leave N+1 gaps), about 310 B each: 30 MiB at most
        # by default, reached only by a scan. Short-lived until PostgreSQL's channel is
        # live (key_changes sets it: only PostgreSQL announces new keys).
        self.unknown = UnknownIds(
            min(cache.unknown_ttl, key_changes.DEGRADED_LOCAL_TTL),
            cache.max_entries,
            clock=monotonic,
        )
        self.failures = FailureLimiter(
            cache.failed_ttl, cache.max_failures_per_key, clock=monotonic
        )
        self.verifies = FairVerifier(
            hasher,
            keys.verify_threads,
            keys.max_queued_verifies_per_org,
            keys.max_queued_verifies,
            on_start=on_verify_start,
        )
        self.verifier_key = verifier_key(server_secret)
        self.proofs = TokenProofs()
        # False while the invalidation channel is down and until the re-sync after it is
        # back: an entry written before a change made meanwhile may be stale, so keys are
        # read from PostgreSQL instead (set by the change listener).
        self.redis_trusted = True
        # The invalidation channels live now (key_changes.REDIS, POSTGRES), and those lost
        # since they were last live (for the log line when they are back).
        self.channels: set[str] = set()
        self.lost: set[str] = set()
        # One store read and argon2 verify per (key, candidate) at a time: a cold burst
        # shares it. A task, so that it finishes (and is counted) even when every request
        # awaiting it is gone.
        self._in_flight: dict[bytes, asyncio.Task[KeyState | None]] = {}
        # Background refreshes of entries near the end of their lifetime, by key id.
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ identify

    async def identify(
        self, credential: str | CIMultiDictProxy[str], client: str | None
    ) -> KeyState:
        """The state of the presented key (given itself, or the request headers carrying
        it) if it is valid and live; raise the matching Refusal otherwise.

        `client` is the caller's address, scoping the wrong-secret limit (§3 step 7).
        """
        presented = credential if isinstance(credential, str) else read_credential(credential)
        if presented is None:
            raise MissingKey()
        state = self.proven(presented)
        if state is not None:
            return self.accept_proven(state)
        state = await self._identify_anew(presented, client)
        if state.revoked or state.expires_at is not None:
            check_status(state, self.clock())
        return state

    def proven(self, presented: str) -> KeyState | None:
        """The common case, found in memory: the state of a key whose very string passed
        every check before (its proof matches a live local entry); None when it must be
        identified anew. Not yet accepted: see `accept_proven`."""
        return self.local.proven(presented[_ID_START:_ID_END], self.proofs.of(presented))

    def accept_proven(self, state: KeyState) -> KeyState:
        """A proven key, counted as a local hit and checked against the clock."""
        metrics.LOCAL_HITS.count += 1
        if state.revoked or state.expires_at is not None:
            check_status(state, self.clock())  # expiry against the clock, on every request
        return state

    async def _identify_anew(self, presented: str, client: str | None) -> KeyState:
        """Every check of a key not seen whole before: format, checksum, env, then tiers."""
        parsed = parse_presented(presented, self.keys)
        verifier = fast_verifier(self.verifier_key, parsed.key_id, parsed.secret)
        entry = self.local.get(parsed.key_id)
        if entry is None and self.unknown.covers(parsed.key_id):
            # In a range of ids known to hold no key (a scan): no Redis, no Postgres.
            metrics.KEY_CACHE.add(metrics.LOCAL_HIT)
            raise InvalidKey()
        if entry is not None and entry.verifier is not None and entry.state is not None:
            metrics.KEY_CACHE.add(metrics.LOCAL_HIT)
            state = _checked(entry.state, entry.verifier, verifier, parsed)
        else:
            if entry is None:
                metrics.LOCAL_MISS.inc()
            else:
                metrics.KEY_CACHE.add(metrics.LOCAL_HIT)
            state = await self._resolve(parsed, verifier, client)
        self.local.put_proof(state.id, self.proofs.of(presented))
        return state

    async def _resolve(self, parsed: ParsedKey, verifier: bytes, client: str | None) -> KeyState:
        key_id = parsed.key_id
        for attempt in range(_ATTEMPTS):
            last = attempt == _ATTEMPTS - 1
            ticket = self.local.ticket()  # before any read: see local_cache
            cached = await self._from_redis(key_id)
            known = cached.verifier if cached is not None else None
            known = known or self.local.known_verifier(key_id)
            if cached is not None and known is not None:
                state = _checked(cached.state, known, verifier, parsed)  # raises if wrong
                if self.local.put(key_id, state, known, ticket=ticket) or last:
                    if cached.verifier is None:
                        await self._fill_redis(state, known)
                    return state
                continue
            # Identical lookups in flight share one store read and one verify: a cold
            # burst (or a hung database) costs one of each, not one per request.
            task = self._in_flight.get(verifier)
            # One that came back outdated may still be listed (its done-callback not run
            # yet): joining it would spend every attempt on it in a moment, without a
            # read, and answer 503. A settled answer (a state, a refusal) is still shared.
            if task is None or _came_back_outdated(task):
                task = asyncio.create_task(self._from_store(parsed, verifier, client, ticket))
                self._in_flight[verifier] = task
                task.add_done_callback(lambda t: self._settled(verifier, t))
            found = await asyncio.shield(task)
            if found is not None:
                return found
            # Invalidated while it was read or verified: read again (the verifier is known).
        raise AuthUnavailable()  # changed on every attempt: let the client retry

    async def _from_redis(self, key_id: str) -> CachedEntry | None:
        """Redis's entry, unless Redis is not trusted now or the entry is older than an
        invalidation this process has seen."""
        if self.redis is None or not self.redis_trusted:
            return None
        try:
            cached = await self.redis.get(key_id)
        except (TimeoutError, RedisError, OSError):
            metrics.REDIS_ERRORS.inc()
            return None
        if self.checkpoint is not None:
            await self.checkpoint("redis", key_id)
        if cached is not None and cached.state.version < self.local.floor(key_id):
            cached = None
        (metrics.REDIS_HIT if cached is not None else metrics.REDIS_MISS).inc()
        return cached

    async def _stored(self, key_id: str, ticket: Ticket) -> tuple[KeyState, str]:
        """The key's state and argon2 hash: kept locally by an earlier failed verify, or
        read from Postgres; raises InvalidKey for an unknown id."""
        entry = self.local.get(key_id)
        if entry is not None and entry.state is not None and entry.secret_hash is not None:
            return entry.state, entry.secret_hash
        gap_ticket = self.unknown.ticket()  # before the read: see unknown_ids
        try:
            async with self.db.connection() as conn:
                found = await queries.find_key_or_gap(conn, key_id)
        except StoreUnavailable:
            metrics.POSTGRES_ERRORS.inc()
            raise AuthUnavailable() from None
        if self.checkpoint is not None:
            await self.checkpoint("postgres", key_id)
        row = found.key
        if row is None:  # the gap around it is cached instead (not an entry)
            metrics.POSTGRES_MISS.inc()
            self.unknown.put(found.below, found.above, ticket=gap_ticket)
            raise InvalidKey()
        metrics.POSTGRES_HIT.inc()
        return KeyState.of(row), row.secret_hash

    async def _from_store(
        self, parsed: ParsedKey, verifier: bytes, client: str | None, ticket: Ticket
    ) -> KeyState | None:
        """The key's state from Postgres, its secret checked (by the known verifier, else
        by argon2, counted against the limits first); None when an invalidation since
        `ticket` outdated what was read. Runs as a task: it finishes, and counts, even
        when every request awaiting it has gone."""
        key_id = parsed.key_id
        state, secret_hash = await self._stored(key_id, ticket)
        known = self.local.known_verifier(key_id)
        if known is not None:  # verified before: only the state needed a refresh
            state = _checked(state, known, verifier, parsed)
            if not self.local.put(key_id, state, known, ticket=ticket):
                return None
            await self._fill_redis(state, known)
            return state
        if state.prefix != parsed.prefix:
            raise InvalidKey().about(state)
        reservation = self.failures.reserve(key_id, client)
        if not isinstance(reservation, Reservation):
            metrics.key_verifications.labels("throttled").inc()
            raise TooManyAttempts(reservation).about(state)
        started = time.perf_counter()
        try:
            if self.checkpoint is not None:
                await self.checkpoint("verify", key_id)
            ok = await self.verifies.verify(state.org, secret_hash, parsed.secret)
        except VerifyQueueFull:
            self.failures.refund(reservation)  # no verify ran: nothing was tried
            raise
        metrics.key_verification_duration.observe(time.perf_counter() - started)
        metrics.key_verifications.labels("valid" if ok else "invalid").inc()
        if not ok:
            current = self.local.get(key_id)
            # A right secret verified meanwhile stays known: dropping its verifier would
            # send valid requests back to argon2, which the failures may by now limit.
            if current is None or current.verifier is None:
                self.local.put(key_id, state, None, secret_hash, ticket=ticket)
            raise InvalidKey().about(state)
        self.failures.refund(reservation)
        stored = self.local.put(key_id, state, verifier, ticket=ticket)  # learns it anyway
        await self._fill_redis(state, verifier)  # Redis keeps whichever state is newer
        await self._upgrade_hash(key_id, secret_hash, parsed.secret)
        return state if stored else None

    async def _upgrade_hash(self, key_id: str, secret_hash: str, secret: str) -> None:
        """After a right secret: if the stored hash has other argon2 parameters than the
        configured ones, store the secret hashed with these (on the argon2 pool). Not a
        change of the key (no version, no invalidation); a failure is left to the next
        verify, and a hash replaced meanwhile (WHERE on the old one) is not overwritten."""
        new = await self.verifies.hasher.rehash_async(secret_hash, secret)
        if new is None:
            return
        try:
            async with self.db.connection() as conn:
                await queries.replace_secret_hash(conn, key_id, secret_hash, new)
        except StoreUnavailable:
            metrics.POSTGRES_ERRORS.inc()

    def _settled(self, verifier: bytes, task: asyncio.Task[KeyState | None]) -> None:
        if self._in_flight.get(verifier) is task:
            del self._in_flight[verifier]
        if not task.cancelled():
            task.exception()  # retrieved: the awaiting requests re-raise it, if any are left

    async def _fill_redis(self, state: KeyState, verifier: bytes) -> None:
        if self.redis is None or not self.redis_trusted:  # likely down: spare the timeout
            return
        try:
            await self.redis.put(state, verifier)
        except (TimeoutError, RedisError, OSError):
            metrics.REDIS_ERRORS.inc()

    # ------------------------------------------------------------------ refresh

    def _refresh_due(self, key_id: str) -> None:
        """A cached key was read late in its entry's life: re-read it in the background
        (once at a time per key), so that a key in steady use never waits on a refill."""
        if key_id in self._refreshing or self.local.known_verifier(key_id) is None:
            return  # being refreshed, or never verified here: nothing to keep warm
        task = asyncio.get_running_loop().create_task(self._refresh(key_id))
        self._refreshing[key_id] = task
        task.add_done_callback(lambda _: self._refreshing.pop(key_id, None))

    async def _refresh(self, key_id: str) -> None:
        """The key's current state from Redis (when trusted) or Postgres, cached under a
        ticket taken before the read: an invalidation heard meanwhile, or a newer version
        already cached, refuses it (local_cache), so a refresh never puts back an older
        state. A store failure leaves the entry to expire as it would have."""
        ticket = self.local.ticket()
        verifier = self.local.known_verifier(key_id)
        if verifier is None:
            return
        cached = await self._from_redis(key_id)
        if cached is not None:
            self.local.put(key_id, cached.state, verifier, ticket=ticket)
            return
        try:
            async with self.db.connection() as conn:
                row = await queries.get_key(conn, key_id)
        except StoreUnavailable:
            metrics.POSTGRES_ERRORS.inc()
            return
        if self.checkpoint is not None:
            await self.checkpoint("postgres", key_id)
        if row is None:  # gone from the store: forget it here too
            self.local.invalidate(key_id, None)
            return
        metrics.POSTGRES_HIT.inc()
        state = KeyState.of(row)
        if self.local.put(key_id, state, verifier, ticket=ticket):
            await self._fill_redis(state, verifier)

    # ------------------------------------------------------------------ changes

    def changed(self, key_id: str, version: int | None) -> bool:
        """`key_id` changed (to `version`, None when unknown): forget it here, and refuse
        older states and lookups begun before this moment (see local_cache).

        False when this version was already heard (both channels announce each change):
        nothing to do again."""
        self.unknown.invalidate(key_id)  # it may be new: its gap holds keys now
        if version is not None and self.local.floor(key_id) >= version:
            return False
        if version == 1 and key_id not in self.local:
            # Created (versions start at 1): nothing here is older, and no lookup can
            # have cached a state of a key that did not exist (unknown ids are gaps).
            return False
        self.local.invalidate(key_id, version)
        return True

    async def key_changed(self, key: ApiKey) -> str | None:
        """A change made by this process (the admin API): here at once, then everywhere.

        PostgreSQL announces it to every gateway on commit; Redis is updated and told here.
        Returns a warning when Redis could not be (the change itself is durable)."""
        self.changed(key.id, key.version)
        if self.redis is None:
            return None
        try:
            await self.redis.key_changed(key)
        except (TimeoutError, RedisError, OSError) as exc:
            metrics.REDIS_ERRORS.inc()
            return redis_missed_change(exc)
        return None

    async def current_state(self, key_id: str) -> KeyState | None:
        """A key's current state for its open sessions: from Redis, or from PostgreSQL
        while Redis is untrusted or stale (a revocation made meanwhile is only there).
        None when neither store answers or the key is unknown."""
        cached = await self._from_redis(key_id)
        if cached is not None:
            return cached.state
        try:
            async with self.db.connection() as conn:
                row = await queries.get_key(conn, key_id)
        except StoreUnavailable:
            metrics.POSTGRES_ERRORS.inc()
            return None
        return KeyState.of(row) if row is not None else None

    async def enforce_sessions(self, key_id: str) -> None:
        """Re-authorise `key_id`'s open WebSocket sessions against its current state."""
        if self.sessions is None or key_id not in self.sessions:
            return
        state = await self.current_state(key_id)
        if state is not None:
            await self.sessions.enforce(state, self.clock())

    # ------------------------------------------------------------------ lifetime

    async def lifetime(self, _app: Any = None) -> AsyncIterator[None]:
        """aiohttp cleanup_ctx: the background loops, supervised, while the app runs;
        on the way out they stop, verifies in flight are dropped and Redis is closed."""
        supervisor = Supervisor()
        # Until a channel is live, nothing would announce a change: entries stay short.
        self.local.ttl = min(self.cache_config.local_ttl, key_changes.DEGRADED_LOCAL_TTL)
        # A change made while no gateway listened (say, by a revoker that could not reach
        # Redis) may have left a stale Redis entry: trust Redis after its re-sync only.
        self.redis_trusted = False
        supervisor.start("invalidations-postgres", lambda: key_changes.listen_postgres(self))
        if (redis := self.redis) is not None:
            supervisor.start("invalidations-redis", lambda: key_changes.listen_redis(self))
            supervisor.start("resync", lambda: key_changes.resync_periodically(self, redis))
        if self.sessions is not None:
            supervisor.start("ws-expiry", lambda: key_changes.watch_sessions(self))
        try:
            yield
        finally:
            await supervisor.stop()
            pending = [*self._in_flight.values(), *self._refreshing.values()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if self.redis is not None:
                await self.redis.close()


_ID_START = -BODY_LENGTH
_ID_END = -BODY_LENGTH + ID_LENGTH


def _checked(state: KeyState, known: bytes, presented: bytes, parsed: ParsedKey) -> KeyState:
    if not same_verifier(known, presented) or state.prefix != parsed.prefix:
        raise InvalidKey().about(state)
    return state


def _came_back_outdated(task: asyncio.Task[KeyState | None]) -> bool:
    return (
        task.done() and not task.cancelled() and task.exception() is None and task.result() is None
    )
