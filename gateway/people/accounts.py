"""User accounts, as the root admin manages them (`keygate users ...`): list every user,
disable one, end all of a user's sessions. Each change is audited in every org of the user."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.keys.models import Actor
from gateway.people import credentials
from gateway.people.models import User
from gateway.people.records import audit, require_user
from gateway.people.rules import require_root
from gateway.store import people_queries as q
from gateway.store.db import Database


@dataclass(frozen=True)
class Accounts:
    """Root's actions on user accounts."""

    db: Database
    clock: Callable[[], datetime]

    async def list_all(self, actor: Actor) -> list[tuple[User, dict[str, str]]]:
        """Every user with their roles (root only: `keygate users list`)."""
        require_root(actor, "list users")
        async with self.db.connection() as conn:
            users = await q.list_users(conn)
            return [(u.user, await q.roles_of(conn, u.id)) for u in users]

    async def disable(self, actor: Actor, email: str) -> User:
        """Disable the account and end every session of it (root only)."""
        require_root(actor, "disable users")
        address = credentials.normalise_email(email)
        now = self.clock()
        async with self.db.transaction() as conn:
            stored = await require_user(conn, address)
            await q.disable_user(conn, stored.id, now)
            ended = await q.revoke_user_sessions(conn, stored.id, now)
            for org in await q.roles_of(conn, stored.id):
                await audit(
                    conn, actor, now, "user.disable", org, {"email": address, "sessions": ended}
                )
            disabled = await q.get_user(conn, address)
        assert disabled is not None
        return disabled.user

    async def revoke_sessions(self, actor: Actor, email: str) -> int:
        """End every session of the user now (root only); how many were live."""
        require_root(actor, "revoke sessions")
        address = credentials.normalise_email(email)
        now = self.clock()
        async with self.db.transaction() as conn:
            stored = await require_user(conn, address)
            ended = await q.revoke_user_sessions(conn, stored.id, now)
            for org in await q.roles_of(conn, stored.id):
                await audit(
                    conn,
                    actor,
                    now,
                    "user.sessions_revoke",
                    org,
                    {"email": address, "sessions": ended},
                )
        return ended
