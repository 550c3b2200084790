"""Every SQL statement about people: users, memberships, sessions, invites and sign-in
attempts, as thin typed functions. Rows become records here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from gateway.people.models import Member, User
from gateway.people.throttle import Count
from gateway.store.db import Connection


@dataclass(frozen=True)
class StoredUser:
    """A users row: the User plus what never leaves the service."""

    id: int
    user: User
    password_hash: str | None = field(repr=False)


@dataclass(frozen=True)
class StoredSession:
    user: StoredUser
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class StoredInvite:
    user: StoredUser
    org: str
    role: str
    created_by: str
    expires_at: datetime
    used_at: datetime | None


_USER_COLUMNS = """u.id, u.email, u.name, u.password_hash, u.disabled_at, u.created_at,
    u.last_sign_in_at"""


def _user(row: asyncpg.Record) -> StoredUser:
    return StoredUser(
        id=row["id"],
        user=User(
            email=row["email"],
            name=row["name"],
            disabled=row["disabled_at"] is not None,
            created_at=row["created_at"],
            last_sign_in_at=row["last_sign_in_at"],
            has_password=row["password_hash"] is not None,
        ),
        password_hash=row["password_hash"],
    )


# --- users ------------------------------------------------------------------------------


async def get_user(conn: Connection, email: str, *, for_update: bool = False) -> StoredUser | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users u WHERE email = $1{lock}", email)
    return None if row is None else _user(row)


async def insert_user(conn: Connection, email: str, name: str, now: datetime) -> StoredUser:
    """A new user, or the existing one with this email (invites race harmlessly)."""
    await conn.execute(
        """INSERT INTO users (email, name, created_at) VALUES ($1, $2, $3)
           ON CONFLICT (email) DO NOTHING""",
        email,
        name,
        now,
    )
    user = await get_user(conn, email, for_update=True)
    assert user is not None
    return user


async def list_users(conn: Connection) -> list[StoredUser]:
    rows = await conn.fetch(f"SELECT {_USER_COLUMNS} FROM users u ORDER BY email")
    return [_user(r) for r in rows]


async def set_password(conn: Connection, user_id: int, password_hash: str) -> None:
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)


async def replace_password_hash(conn: Connection, user_id: int, old: str, new: str) -> None:
    """A re-hash with current parameters, unless the password changed meanwhile."""
    await conn.execute(
        "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
        user_id,
        old,
        new,
    )


async def set_name(conn: Connection, user_id: int, name: str) -> None:
    await conn.execute("UPDATE users SET name = $2 WHERE id = $1", user_id, name)


async def stamp_sign_in(conn: Connection, user_id: int, now: datetime) -> None:
    await conn.execute("UPDATE users SET last_sign_in_at = $2 WHERE id = $1", user_id, now)


async def disable_user(conn: Connection, user_id: int, now: datetime) -> None:
    await conn.execute(
        "UPDATE users SET disabled_at = coalesce(disabled_at, $2) WHERE id = $1", user_id, now
    )


# --- memberships ------------------------------------------------------------------------


async def roles_of(conn: Connection, user_id: int) -> dict[str, str]:
    """org slug -> role, for every org the user is in."""
    rows = await conn.fetch(
        "SELECT org, role FROM memberships WHERE user_id = $1 ORDER BY org", user_id
    )
    return {r["org"]: r["role"] for r in rows}


async def get_role(conn: Connection, org: str, user_id: int) -> str | None:
    role: str | None = await conn.fetchval(
        "SELECT role FROM memberships WHERE org = $1 AND user_id = $2", org, user_id
    )
    return role


async def add_member(conn: Connection, org: str, user_id: int, role: str, now: datetime) -> None:
    await conn.execute(
        """INSERT INTO memberships (org, user_id, role, created_at) VALUES ($1, $2, $3, $4)""",
        org,
        user_id,
        role,
        now,
    )


async def set_role(conn: Connection, org: str, user_id: int, role: str) -> None:
    await conn.execute(
        "UPDATE memberships SET role = $3 WHERE org = $1 AND user_id = $2", org, user_id, role
    )


async def remove_member(conn: Connection, org: str, user_id: int) -> None:
    await conn.execute("DELETE FROM memberships WHERE org = $1 AND user_id = $2", org, user_id)


async def lock_owners(conn: Connection, org: str) -> list[int]:
    """The org's owners, their rows locked until commit: two owners demoting each other
    at once cannot both succeed and leave the org without one."""
    rows = await conn.fetch(
        """SELECT user_id FROM memberships WHERE org = $1 AND role = 'owner'
           ORDER BY user_id FOR UPDATE""",
        org,
    )
    return [r["user_id"] for r in rows]


async def list_members(conn: Connection, org: str) -> list[Member]:
    rows = await conn.fetch(
        """SELECT m.org, u.email, u.name, m.role, u.last_sign_in_at
           FROM memberships m JOIN users u ON u.id = m.user_id
           WHERE m.org = $1 ORDER BY u.email""",
        org,
    )
    return [Member(r["org"], r["email"], r["name"], r["role"], r["last_sign_in_at"]) for r in rows]


# --- invites ----------------------------------------------------------------------------


async def insert_invite(
    conn: Connection,
    token_hash: bytes,
    user_id: int,
    org: str,
    role: str,
    *,
    now: datetime,
    created_by: str,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO invites (token_hash, user_id, org, role, created_at, created_by, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        token_hash,
        user_id,
        org,
        role,
        now,
        created_by,
        expires_at,
    )


async def get_invite(
    conn: Connection, token_hash: bytes, *, for_update: bool = False
) -> StoredInvite | None:
    lock = " FOR UPDATE OF i" if for_update else ""
    row = await conn.fetchrow(
        f"""SELECT {_USER_COLUMNS}, i.org, i.role, i.created_by, i.expires_at, i.used_at
            FROM invites i JOIN users u ON u.id = i.user_id
            WHERE i.token_hash = $1{lock}""",
        token_hash,
    )
    if row is None:
        return None
    return StoredInvite(
        _user(row), row["org"], row["role"], row["created_by"], row["expires_at"], row["used_at"]
    )


async def use_invite(conn: Connection, token_hash: bytes, now: datetime) -> None:
    await conn.execute("UPDATE invites SET used_at = $2 WHERE token_hash = $1", token_hash, now)


# --- sessions ---------------------------------------------------------------------------


async def insert_session(
    conn: Connection,
    id_hash: bytes,
    user_id: int,
    *,
    now: datetime,
    expires_at: datetime,
    client_ip: str | None,
    user_agent: str | None,
) -> None:
    await conn.execute(
        """INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at,
               client_ip, user_agent)
           VALUES ($1, $2, $3, $3, $4, $5, $6)""",
        id_hash,
        user_id,
        now,
        expires_at,
        client_ip,
        user_agent,
    )


async def get_session(conn: Connection, id_hash: bytes) -> StoredSession | None:
    row = await conn.fetchrow(
        f"""SELECT {_USER_COLUMNS}, s.created_at AS s_created_at, s.last_seen_at,
                   s.expires_at, s.revoked_at
            FROM sessions s JOIN users u ON u.id = s.user_id
            WHERE s.id_hash = $1""",
        id_hash,
    )
    if row is None:
        return None
    return StoredSession(
        _user(row), row["s_created_at"], row["last_seen_at"], row["expires_at"], row["revoked_at"]
    )


async def touch_session(conn: Connection, id_hash: bytes, now: datetime) -> None:
    await conn.execute(
        "UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2",
        id_hash,
        now,
    )


async def revoke_session(conn: Connection, id_hash: bytes, now: datetime) -> None:
    await conn.execute(
        "UPDATE sessions SET revoked_at = $2 WHERE id_hash = $1 AND revoked_at IS NULL",
        id_hash,
        now,
    )


async def revoke_user_sessions(
    conn: Connection, user_id: int, now: datetime, *, keep: bytes | None = None
) -> int:
    """Revoke every live session of the user (but `keep`); how many were live."""
    result = await conn.execute(
        """UPDATE sessions SET revoked_at = $2
           WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
             AND ($3::bytea IS NULL OR id_hash <> $3)""",
        user_id,
        now,
        keep,
    )
    return int(result.rsplit(" ", 1)[-1])


# --- sign-in attempts -------------------------------------------------------------------


async def count_attempt(conn: Connection, bucket: str, now: datetime, window: float) -> Count:
    """Count one attempt in `bucket`'s window (a new window once the last one ended)."""
    row = await conn.fetchrow(
        """INSERT INTO sign_in_attempts AS a (bucket, window_start, attempts)
           VALUES ($1, $2, 1)
           ON CONFLICT (bucket) DO UPDATE SET
               window_start = CASE WHEN a.window_start + $3 <= $2 THEN $2
                                   ELSE a.window_start END,
               attempts = CASE WHEN a.window_start + $3 <= $2 THEN 1
                               ELSE a.attempts + 1 END
           RETURNING attempts, window_start""",
        bucket,
        now,
        timedelta(seconds=window),
    )
    assert row is not None
    return Count(row["attempts"], row["window_start"])


async def forget_attempts(conn: Connection, bucket: str) -> None:
    await conn.execute("DELETE FROM sign_in_attempts WHERE bucket = $1", bucket)


async def take_back_attempt(conn: Connection, bucket: str) -> None:
    await conn.execute(
        "UPDATE sign_in_attempts SET attempts = attempts - 1 WHERE bucket = $1 AND attempts > 0",
        bucket,
    )
