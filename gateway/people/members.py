"""Memberships of an org: list its members, change a member's role, remove a member.
The last owner of an org always stays one (owners are locked while this is checked)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.keys.errors import Conflict
from gateway.keys.models import Actor
from gateway.people import credentials
from gateway.people.models import Member
from gateway.people.records import audit, member, require_member, require_org
from gateway.people.rules import check_role, require_owner, require_role
from gateway.store import people_queries as q
from gateway.store.db import Database


@dataclass(frozen=True)
class Members:
    """Who belongs to each org, and with which role."""

    db: Database
    clock: Callable[[], datetime]

    async def of_org(self, actor: Actor, org: str) -> list[Member]:
        """The org's members (root, or an owner or admin of the org)."""
        require_role(actor, org, ("owner", "admin"), "see the members")
        async with self.db.connection() as conn:
            await require_org(conn, org)
            return await q.list_members(conn, org)

    async def change_role(self, actor: Actor, org: str, email: str, role: str) -> Member:
        """Give a member another role (root, or an owner); the last owner stays one."""
        require_owner(actor, org)
        address = credentials.normalise_email(email)
        role = check_role(role)
        now = self.clock()
        async with self.db.transaction() as conn:
            await require_org(conn, org)
            owners = await q.lock_owners(conn, org)
            stored, current = await require_member(conn, org, address)
            if current == role:
                return await member(conn, org, address)
            if current == "owner" and owners == [stored.id]:
                raise Conflict(
                    f"{address} is the last owner of {org}; make someone else an owner first",
                    "role",
                )
            await q.set_role(conn, org, stored.id, role)
            await audit(
                conn,
                actor,
                now,
                "member.role",
                org,
                {"email": address, "old_role": current, "role": role},
            )
            return await member(conn, org, address)

    async def remove(self, actor: Actor, org: str, email: str) -> None:
        """Take a person out of the org (root, or an owner); the last owner stays."""
        require_owner(actor, org)
        address = credentials.normalise_email(email)
        now = self.clock()
        async with self.db.transaction() as conn:
            await require_org(conn, org)
            owners = await q.lock_owners(conn, org)
            stored, current = await require_member(conn, org, address)
            if current == "owner" and owners == [stored.id]:
                raise Conflict(
                    f"{address} is the last owner of {org}; make someone else an owner first",
                    "email",
                )
            await q.remove_member(conn, org, stored.id)
            await audit(conn, actor, now, "member.remove", org, {"email": address, "role": current})
