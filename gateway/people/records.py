"""Reads that refuse (unknown org, user or member) and the audit entry, as the people
actions use them inside their transactions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.keys import audit as audit_log
from gateway.keys.errors import NotFound
from gateway.keys.models import Actor
from gateway.people.models import Member
from gateway.store import people_queries as q
from gateway.store import queries
from gateway.store.db import Connection


async def require_org(conn: Connection, org: str) -> None:
    """NotFound on `org` unless the org exists."""
    if not isinstance(org, str) or await queries.get_org(conn, org) is None:
        raise NotFound(f"unknown org {org!r}", "org")


async def require_user(conn: Connection, email: str) -> q.StoredUser:
    """The user, locked for the transaction; NotFound on `email` when there is none."""
    stored = await q.get_user(conn, email, for_update=True)
    if stored is None:
        raise NotFound(f"unknown user {email!r}", "email")
    return stored


async def require_member(conn: Connection, org: str, email: str) -> tuple[q.StoredUser, str]:
    """The user and their role in `org`; NotFound on `email` when they have none."""
    stored = await q.get_user(conn, email)
    role = None if stored is None else await q.get_role(conn, org, stored.id)
    if stored is None or role is None:
        raise NotFound(f"{email} is not a member of {org}", "email")
    return stored, role


async def member(conn: Connection, org: str, email: str) -> Member:
    """The member as listed (the caller knows they are one)."""
    return next(m for m in await q.list_members(conn, org) if m.email == email)


async def audit(
    conn: Connection,
    actor: Actor,
    now: datetime,
    action: str,
    org: str,
    details: dict[str, Any],
) -> None:
    """Record a people action in the org's audit log (no key: key_id and scopes are null)."""
    await audit_log.record(conn, actor, now, action, org, details=details)
