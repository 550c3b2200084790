"""Every SQL statement the service runs, as thin typed functions; rows become records here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.keys.models import ApiKey, AuditEntry, Org
from gateway.keys.rate_limits import RateLimit
from gateway.store.db import Connection

UniqueViolation = asyncpg.exceptions.UniqueViolationError

_KEY_COLUMNS = """id, org, name, prefix, env, secret_hash, scopes, metadata, created_at,
    created_by, expires_at, last_used_at, revoked_at, revoked_by, revoke_reason,
    rolled_from, version, rate_limit_requests, rate_limit_per"""


def _org(row: asyncpg.Record) -> Org:
    return Org(slug=row["slug"], name=row["name"], created_at=row["created_at"])


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        org=row["org"],
        name=row["name"],
        prefix=row["prefix"],
        env=row["env"],
        scopes=tuple(row["scopes"]),
        metadata=row["metadata"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
        revoke_reason=row["revoke_reason"],
        rolled_from=row["rolled_from"],
        version=row["version"],
        rate_limit=_rate_limit(row),
        secret_hash=row["secret_hash"],
    )


def _rate_limit(row: asyncpg.Record) -> RateLimit | None:
    if row["rate_limit_requests"] is None:
        return None
    return RateLimit(row["rate_limit_requests"], row["rate_limit_per"])


def _audit(row: asyncpg.Record) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        org=row["org"],
        key_id=row["key_id"],
        action=row["action"],
        principal=row["principal"],
        old_scopes=None if row["old_scopes"] is None else tuple(row["old_scopes"]),
        new_scopes=None if row["new_scopes"] is None else tuple(row["new_scopes"]),
        client_ip=row["client_ip"],
        request_id=row["request_id"],
        traceparent=row["traceparent"],
        details=row["details"],
        user_agent=row["user_agent"],
    )


# --- orgs -------------------------------------------------------------------------------


async def insert_org(conn: Connection, slug: str, name: str, now: datetime) -> Org:
    row = await conn.fetchrow(
        "INSERT INTO orgs (slug, name, created_at) VALUES ($1, $2, $3) RETURNING *",
        slug,
        name,
        now,
    )
    return _org(row)


async def get_org(conn: Connection, slug: str) -> Org | None:
    row = await conn.fetchrow("SELECT * FROM orgs WHERE slug = $1", slug)
    return None if row is None else _org(row)


async def list_orgs(conn: Connection) -> list[Org]:
    return [_org(r) for r in await conn.fetch("SELECT * FROM orgs ORDER BY slug")]


# --- keys -------------------------------------------------------------------------------


async def insert_key(conn: Connection, key: ApiKey) -> ApiKey:
    row = await conn.fetchrow(
        f"""INSERT INTO api_keys (id, org, name, prefix, env, secret_hash, scopes, metadata,
                created_at, created_by, expires_at, rolled_from, rate_limit_requests,
                rate_limit_per)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            RETURNING {_KEY_COLUMNS}""",
        key.id,
        key.org,
        key.name,
        key.prefix,
        key.env,
        key.secret_hash,
        list(key.scopes),
        key.metadata,
        key.created_at,
        key.created_by,
        key.expires_at,
        key.rolled_from,
        *_rate_limit_columns(key.rate_limit),
    )
    return _key(row)


def _rate_limit_columns(limit: RateLimit | None) -> tuple[int | None, int | None]:
    return (None, None) if limit is None else (limit.requests, limit.per)


async def get_key(conn: Connection, key_id: str, *, for_update: bool = False) -> ApiKey | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1{lock}", key_id)
    return None if row is None else _key(row)


@dataclass(frozen=True)
class KeyOrGap:
    """A key id's row, or (when there is none) the nearest ids around it: no key id lies
    strictly between `below` and `above` (None: none on that side), compared by code point."""

    key: ApiKey | None
    below: str | None = None
    above: str | None = None


# `key_id`'s row, else (CASE: only then are the subqueries run) its nearest neighbours in
# code-point order, each one short scan of migration 0007's index.
KEY_OR_GAP_SQL = f"""SELECT k.*,
        CASE WHEN k.id IS NULL THEN (
            SELECT id FROM api_keys WHERE (id COLLATE "C") < $1
            ORDER BY (id COLLATE "C") DESC LIMIT 1) END AS gap_below,
        CASE WHEN k.id IS NULL THEN (
            SELECT id FROM api_keys WHERE (id COLLATE "C") > $1
            ORDER BY (id COLLATE "C") LIMIT 1) END AS gap_above
    FROM (SELECT) AS one
    LEFT JOIN (SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1) AS k ON TRUE"""


async def find_key_or_gap(conn: Connection, key_id: str) -> KeyOrGap:
    """`key_id`'s row, or the gap around it, in one round trip (for negative caching).

    COLLATE "C" orders ids as Python compares strings, whatever the database's collation.
    """
    row = await conn.fetchrow(KEY_OR_GAP_SQL, key_id)
    if row["id"] is not None:
        return KeyOrGap(_key(row))
    return KeyOrGap(None, row["gap_below"], row["gap_above"])


_STATUS_FILTERS = {
    "all": "TRUE",
    "revoked": "revoked_at IS NOT NULL",
    "expired": "revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at <= p.now",
    "active": "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > p.now)",
}


async def list_keys(
    conn: Connection,
    org: str,
    status: str,
    now: datetime,
    limit: int,
    after: tuple[datetime, str] | None,
    *,
    search: str | None = None,
) -> list[ApiKey]:
    """Keys of `org`, newest first, keyset-paginated after (created_at, id); `search`:
    name contains it (any case), or display prefix or id starts with it."""
    where = _STATUS_FILTERS[status]
    args: list[Any] = [org, now, limit]
    page = ""
    if after is not None:
        page = f" AND (created_at, id) < (${len(args) + 1}, ${len(args) + 2})"
        args.extend(after)
    if search is not None:
        n = len(args) + 1
        # LIKE patterns from user text: its own % _ and \ are matched literally.
        literal = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        page += (
            f" AND (name ILIKE '%' || ${n} || '%' OR prefix || id LIKE ${n} || '%'"
            f" OR id LIKE ${n} || '%')"
        )
        args.append(literal)
    rows = await conn.fetch(
        f"""SELECT {_KEY_COLUMNS} FROM api_keys, (SELECT $2::timestamptz AS now) AS p
            WHERE org = $1 AND ({where}){page}
            ORDER BY created_at DESC, id DESC LIMIT $3""",
        *args,
    )
    return [_key(r) for r in rows]


async def update_key(
    conn: Connection, key_id: str, name: str, scopes: Sequence[str], rate_limit: RateLimit | None
) -> ApiKey:
    row = await conn.fetchrow(
        f"""UPDATE api_keys SET name = $2, scopes = $3, rate_limit_requests = $4,
                rate_limit_per = $5, version = version + 1
            WHERE id = $1 RETURNING {_KEY_COLUMNS}""",
        key_id,
        name,
        list(scopes),
        *_rate_limit_columns(rate_limit),
    )
    return _key(row)


async def revoke_key(
    conn: Connection, key_id: str, now: datetime, by: str, reason: str | None
) -> ApiKey:
    row = await conn.fetchrow(
        f"""UPDATE api_keys SET revoked_at = $2, revoked_by = $3, revoke_reason = $4,
                version = version + 1
            WHERE id = $1 RETURNING {_KEY_COLUMNS}""",
        key_id,
        now,
        by,
        reason,
    )
    return _key(row)


async def set_key_expiry(conn: Connection, key_id: str, expires_at: datetime) -> ApiKey:
    row = await conn.fetchrow(
        f"""UPDATE api_keys SET expires_at = $2, version = version + 1
            WHERE id = $1 RETURNING {_KEY_COLUMNS}""",
        key_id,
        expires_at,
    )
    return _key(row)


async def stamp_last_used(conn: Connection, key_ids: Sequence[str], at: Sequence[float]) -> int:
    """One statement (its own transaction) for a chunk of stamps (unix seconds, as the
    recorder keeps them: sent as float8, no datetime made per key); never moves one back.

    Rows are locked in id order before any is written (LockRows above the sort), so two
    gateways stamping overlapping keys wait for each other instead of deadlocking,
    whatever the order they pass; a plain UPDATE ... FROM unnest locks in the order given
    and does deadlock. A row whose stamp is already as new is neither locked nor written.
    `id = ANY` makes both scans index lookups, whatever the table's size."""
    result: str = await conn.execute(
        """WITH stamps AS (
               SELECT s.id, to_timestamp(s.epoch) AS at
               FROM unnest($1::text[], $2::float8[]) AS s(id, epoch)),
           locked AS MATERIALIZED (
               SELECT k.id, s.at FROM api_keys AS k
               JOIN stamps AS s ON k.id = s.id
               WHERE k.id = ANY($1::text[])
                 AND (k.last_used_at IS NULL OR k.last_used_at < s.at)
               ORDER BY k.id
               FOR NO KEY UPDATE OF k)
           UPDATE api_keys AS k SET last_used_at = locked.at
           FROM locked
           WHERE k.id = locked.id AND (k.last_used_at IS NULL OR k.last_used_at < locked.at)""",
        key_ids if isinstance(key_ids, list) else list(key_ids),
        at if isinstance(at, list) else list(at),
    )
    return int(result.rsplit(" ", 1)[-1])


async def replace_secret_hash(conn: Connection, key_id: str, old: str, new: str) -> bool:
    """Store `new` (the same secret hashed with current argon2 parameters) in place of
    `old`. Only that column: the key's state, and so its version, is unchanged (nothing to
    invalidate). False when the stored hash is no longer `old` (rehashed meanwhile)."""
    result: str = await conn.execute(
        "UPDATE api_keys SET secret_hash = $3 WHERE id = $1 AND secret_hash = $2",
        key_id,
        old,
        new,
    )
    return result.rsplit(" ", 1)[-1] == "1"


# --- audit ------------------------------------------------------------------------------


async def insert_audit(
    conn: Connection,
    *,
    at: datetime,
    org: str,
    key_id: str | None,
    action: str,
    principal: str,
    old_scopes: Sequence[str] | None,
    new_scopes: Sequence[str] | None,
    client_ip: str | None,
    request_id: str | None,
    traceparent: str | None,
    details: dict[str, Any],
    user_agent: str | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO audit_log (at, org, key_id, action, principal, old_scopes, new_scopes,
               client_ip, request_id, traceparent, details, user_agent)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        at,
        org,
        key_id,
        action,
        principal,
        None if old_scopes is None else list(old_scopes),
        None if new_scopes is None else list(new_scopes),
        client_ip,
        request_id,
        traceparent,
        details,
        user_agent,
    )


async def list_audit(
    conn: Connection,
    org: str,
    *,
    key_id: str | None,
    action: str | None,
    limit: int,
    before_id: int | None,
) -> list[AuditEntry]:
    """Entries of `org`, newest first, keyset-paginated before `before_id`."""
    rows = await conn.fetch(
        """SELECT * FROM audit_log
           WHERE org = $1
             AND ($2::text IS NULL OR key_id = $2)
             AND ($3::text IS NULL OR action = $3)
             AND ($4::bigint IS NULL OR id < $4)
           ORDER BY id DESC LIMIT $5""",
        org,
        key_id,
        action,
        before_id,
        limit,
    )
    return [_audit(r) for r in rows]


async def changed_since(conn: Connection, seconds: float) -> datetime:
    """PostgreSQL's own `now() - seconds`: the start of a window of recent changes (for
    re-syncing the Redis tier), fixed once so that every page of keys_changed_since reads
    the same window (the gateway's clock may differ)."""
    value: datetime = await conn.fetchval("SELECT now() - make_interval(secs => $1)", seconds)
    return value


async def keys_changed_since(
    conn: Connection, since: datetime, after_id: str, limit: int
) -> list[ApiKey]:
    """One page of the keys changed after `since`: those with an id above `after_id`
    ("" for the first page), in id order, at most `limit`.

    Paged by id, not by (updated_at, id): one transaction can change many keys at one
    updated_at, and every page of such ties would sort them all again (the index is on
    updated_at alone). A key changed again while a re-sync pages is read at its newer
    version if its page is still to come, and not again otherwise: that change is heard
    on the invalidation channels, which are subscribed before a re-sync."""
    rows = await conn.fetch(
        f"""SELECT {_KEY_COLUMNS} FROM api_keys
            WHERE updated_at > $1 AND id > $2
            ORDER BY id LIMIT $3""",
        since,
        after_id,
        limit,
    )
    return [_key(r) for r in rows]
