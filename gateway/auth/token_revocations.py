"""This worker's copy of the user-token revocations, and the loops that keep it current.

Revocations are few (one row per person revoked, per org) and every one is needed on the
request path, so each worker holds them all in memory: checking a token is one dict
lookup. The copy is loaded at start-up, then kept current by two channels carrying the
whole revocation (PostgreSQL LISTEN/NOTIFY and Redis pub/sub, like key invalidations), and
re-read from PostgreSQL (what changed since the highest version known) whenever a channel
(re)connects, every RESYNC seconds, and every DEGRADED_RESYNC seconds while neither
channel is live: a revocation reaches every worker within a second through either
channel, and within DEGRADED_RESYNC through PostgreSQL alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.auth.token_claims import UserIdentity
from gateway.keys.errors import StoreUnavailable
from gateway.store import token_revocations as store
from gateway.store.db import Database
from gateway.store.token_revocations import ANY_ISSUER, TokenRevocation

log = logging.getLogger("keygate.auth")

RESYNC = 30.0
DEGRADED_RESYNC = 1.0
MAX_BACKOFF = 1.0
STORE_DOWN = (TimeoutError, RedisError, OSError, StoreUnavailable)


class RevokedHook(Protocol):
    """Told of each revocation as it is heard (the open WebSocket sessions end)."""

    def __call__(self, revocation: TokenRevocation) -> None: ...


class Revocations:
    """(org, subject) -> {issuer or "": revoked up to (unix seconds)}."""

    def __init__(self, db: Database, on_revoked: RevokedHook | None = None) -> None:
        self.db = db
        self.on_revoked = on_revoked
        self.version = 0
        self.loaded = False
        self.channels: set[str] = set()
        self._by_subject: dict[tuple[str, str], dict[str, float]] = {}
        self._loading: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_subject.values())

    def revoked(self, identity: UserIdentity) -> bool:
        """Whether a revocation covers this token (issued at or before it). A token
        without `iat` cannot show it came later: any revocation of its subject covers it."""
        entries = self._by_subject.get((identity.org, identity.subject))
        if entries is None:
            return False
        issued = identity.issued_at
        for issuer in (identity.issuer, ANY_ISSUER):
            before = entries.get(issuer)
            if before is not None and (issued is None or issued <= before):
                return True
        return False

    def apply(self, revocation: TokenRevocation) -> bool:
        """Take a revocation in (a later `before` wins, whatever order they arrive in);
        True when it changed anything."""
        self.version = max(self.version, revocation.version)
        entries = self._by_subject.setdefault((revocation.org, revocation.subject), {})
        known = entries.get(revocation.issuer)
        if known is not None and known >= revocation.before:
            return False
        entries[revocation.issuer] = revocation.before
        if self.on_revoked is not None:
            self.on_revoked(revocation)
        return True

    async def ensure_loaded(self) -> None:
        """Load every revocation once (shared by concurrent callers); raises
        StoreUnavailable while PostgreSQL cannot be read."""
        if self.loaded:
            return
        task = self._loading
        if task is None:
            task = self._loading = asyncio.create_task(self.resync())
            task.add_done_callback(self._settled)
        await asyncio.shield(task)

    def _settled(self, task: asyncio.Task[None]) -> None:
        if self._loading is task:
            self._loading = None
        if not task.cancelled():
            task.exception()  # retrieved: the awaiting requests re-raise it

    async def resync(self) -> None:
        """Read what changed since the highest version known (everything, the first time)."""
        async with self.db.connection() as conn:
            changed = await store.changed_since(conn, self.version)
        for revocation in changed:
            self.apply(revocation)
        self.loaded = True

    def heard(self, message: str) -> None:
        revocation = store.parse_message(message)
        if revocation is not None:
            self.apply(revocation)

    async def listen(
        self, channel: str, subscribe: Callable[[], AsyncGenerator[str, None]]
    ) -> None:
        """Hear `channel` for as long as the worker runs, reconnecting with backoff; each
        (re)connection re-syncs what was missed meanwhile."""
        backoff = 0.1
        while True:
            try:
                async with contextlib.aclosing(subscribe()) as messages:
                    async for message in messages:
                        if not message:  # (re)subscribed
                            await self.resync()
                            self.channels.add(channel)
                            backoff = 0.1
                            continue
                        self.heard(message)
            except BaseException as exc:
                self.channels.discard(channel)
                if not isinstance(exc, STORE_DOWN):
                    raise  # cancelled, or a bug: the supervisor logs, counts and restarts it
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def resync_periodically(self) -> None:
        """The safety net under both channels: often while neither is live."""
        while True:
            await asyncio.sleep(RESYNC if self.channels else DEGRADED_RESYNC)
            try:
                await self.resync()
            except STORE_DOWN as exc:
                log.debug("token revocations re-sync failed: %s", type(exc).__name__)

    def loops(self, redis: aioredis.Redis | None) -> dict[str, Callable[[], Awaitable[None]]]:
        """The background loops to run under a Supervisor, by task name."""
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "token-revocations-postgres": lambda: self.listen(
                "postgres", lambda: store.pg_messages(self.db)
            ),
            "token-revocations-resync": self.resync_periodically,
        }
        if redis is not None:
            loops["token-revocations-redis"] = lambda: self.listen(
                "redis", lambda: store.redis_messages(redis)
            )
        return loops
