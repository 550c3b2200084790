"""Server-side console sessions: start one, look one up, expire it, sign out.

Sessions are read from PostgreSQL on every request (no cache), so a revoked session ends
at the next request. Only the SHA-256 of a session id is stored; the CSRF token is derived
from the id under the server secret, so it needs no storage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.config import ConsoleConfig
from gateway.keys.models import Actor
from gateway.people import credentials
from gateway.people.models import SessionInfo, SignedIn, User
from gateway.people.rules import clean_user_agent
from gateway.store import people_queries as q
from gateway.store.db import Connection, Database

TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most once a minute


@dataclass(frozen=True)
class Sessions:
    """The console's sessions, with their idle and absolute limits from `console`."""

    db: Database
    secret: bytes = field(repr=False)
    console: ConsoleConfig
    clock: Callable[[], datetime]

    async def start(
        self,
        conn: Connection,
        stored: q.StoredUser,
        now: datetime,
        client_ip: str | None,
        user_agent: str | None,
    ) -> SignedIn:
        """A new session for `stored`, in the caller's transaction (which signed them in)."""
        session_id = credentials.new_token()
        expires_at = now + timedelta(seconds=self.console.absolute_timeout)
        await q.insert_session(
            conn,
            credentials.digest(session_id),
            stored.id,
            now=now,
            expires_at=expires_at,
            client_ip=client_ip,
            user_agent=clean_user_agent(user_agent),
        )
        await q.stamp_sign_in(conn, stored.id, now)
        roles = await q.roles_of(conn, stored.id)
        user = User(
            stored.user.email,
            stored.user.name,
            False,
            stored.user.created_at,
            now,
            stored.user.has_password,
        )
        info = SessionInfo(user, roles, credentials.csrf_token(self.secret, session_id), expires_at)
        return SignedIn(session_id, info, int(self.console.absolute_timeout))

    async def find(self, session_id: str) -> SessionInfo | None:
        """The live session `session_id` names, or None (unknown, signed out, revoked,
        idle or past its absolute expiry, user disabled). Read from PostgreSQL each time."""
        if not credentials.well_formed_token(session_id):
            return None
        id_hash = credentials.digest(session_id)
        now = self.clock()
        async with self.db.connection() as conn:
            stored = await q.get_session(conn, id_hash)
            if stored is None or not is_live(stored, now, self.console.idle_timeout):
                return None
            if now - stored.last_seen_at >= TOUCH_EVERY:
                await q.touch_session(conn, id_hash, now)
            roles = await q.roles_of(conn, stored.user.id)
        return SessionInfo(
            stored.user.user,
            roles,
            credentials.csrf_token(self.secret, session_id),
            stored.expires_at,
        )

    async def end(self, session_id: str) -> None:
        """End the session (nothing happens for an unknown one)."""
        if not credentials.well_formed_token(session_id):
            return
        async with self.db.connection() as conn:
            await q.revoke_session(conn, credentials.digest(session_id), self.clock())


def is_live(stored: q.StoredSession, now: datetime, idle_timeout: float) -> bool:
    """Not revoked, before its absolute expiry, used within `idle_timeout` seconds, and its
    user still enabled."""
    idle_until = stored.last_seen_at + timedelta(seconds=idle_timeout)
    return (
        stored.revoked_at is None
        and now < stored.expires_at
        and now < idle_until
        and not stored.user.user.disabled
    )


def actor_for(
    info: SessionInfo,
    *,
    client_ip: str | None,
    user_agent: str | None,
    request_id: str | None,
    traceparent: str | None,
) -> Actor:
    """The person as the services' principal `user:<email>`, with their roles now."""
    return Actor(
        principal=f"user:{info.user.email}",
        roles=dict(info.roles),
        client_ip=client_ip,
        request_id=request_id,
        traceparent=traceparent,
        user_agent=clean_user_agent(user_agent),
    )
