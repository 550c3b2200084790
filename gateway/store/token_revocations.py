"""Revocations of user tokens in PostgreSQL and their two announcement channels.

A revocation is one row per (org, issuer, subject) (migration 0006): tokens of that
subject for that org issued up to `revoked_before` are refused. Every committed change is
announced by PostgreSQL itself on `keygate_token_revocations` (LISTEN/NOTIFY), and by its
writer on the Redis channel `keygate:token-revocations`, with the same JSON message, so a
gateway hears it within a second through either: the message carries the whole
revocation, so hearing it is enough even when the gateway cannot read PostgreSQL then.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from gateway.store import redis_listen
from gateway.store.db import Connection, Database
from gateway.store.pg_listen import KEEPALIVE, notifications

PG_CHANNEL = "keygate_token_revocations"
REDIS_CHANNEL = "keygate:token-revocations"
APPLICATION_NAME = "keygate-token-revocations"
ANY_ISSUER = ""


@dataclass(frozen=True)
class TokenRevocation:
    """Tokens of `subject` for `org` (from `issuer`, or any: "") issued up to `before`
    (unix seconds) are refused."""

    org: str
    issuer: str
    subject: str
    before: float
    version: int
    revoked_by: str = ""

    def message(self) -> str:
        """The channels' message (the same JSON object as migration 0006's trigger)."""
        return json.dumps(
            {
                "v": self.version,
                "org": self.org,
                "iss": self.issuer,
                "sub": self.subject,
                "before": self.before,
            },
            separators=(",", ":"),
        )


def parse_message(text: str) -> TokenRevocation | None:
    """A channel's message, or None when it is not one (never raises)."""
    try:
        data = json.loads(text)
        revocation = TokenRevocation(
            org=str(data["org"]),
            issuer=str(data["iss"]),
            subject=str(data["sub"]),
            before=float(data["before"]),
            version=int(data["v"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return revocation


def _row(row: asyncpg.Record) -> TokenRevocation:
    return TokenRevocation(
        org=row["org"],
        issuer=row["issuer"],
        subject=row["subject"],
        before=row["revoked_before"].timestamp(),
        version=row["version"],
        revoked_by=row["revoked_by"],
    )


async def revoke(
    conn: Connection, org: str, issuer: str, subject: str, before: datetime, by: str
) -> TokenRevocation:
    """Record (or move forward, never back) a revocation; a new version either way."""
    row = await conn.fetchrow(
        """INSERT INTO token_revocations (org, issuer, subject, revoked_before, revoked_by)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (org, issuer, subject) DO UPDATE
               SET revoked_before = greatest(token_revocations.revoked_before,
                                             EXCLUDED.revoked_before),
                   revoked_by = EXCLUDED.revoked_by,
                   version = nextval('token_revocations_version')
           RETURNING org, issuer, subject, revoked_before, revoked_by, version""",
        org,
        issuer,
        subject,
        before,
        by,
    )
    assert row is not None
    return _row(row)


async def changed_since(conn: Connection, version: int) -> list[TokenRevocation]:
    """Every revocation with a version above `version`, oldest first."""
    rows = await conn.fetch(
        """SELECT org, issuer, subject, revoked_before, revoked_by, version
           FROM token_revocations WHERE version > $1 ORDER BY version""",
        version,
    )
    return [_row(r) for r in rows]


async def org_exists(conn: Connection, slug: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM orgs WHERE slug = $1)", slug))


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def pg_messages(db: Database, keepalive: float = KEEPALIVE) -> AsyncGenerator[str, None]:
    """ "" once listening on PG_CHANNEL, then each notification's payload; raises
    StoreUnavailable when the connection cannot be made or is lost (the caller reconnects
    and re-syncs). The LISTEN session is gateway.store.pg_listen's."""
    return notifications(db, PG_CHANNEL, application_name=APPLICATION_NAME, keepalive=keepalive)


async def publish(client: aioredis.Redis, revocation: TokenRevocation) -> None:
    """Tell every gateway through Redis (raises RedisError/OSError/TimeoutError)."""
    await client.publish(REDIS_CHANNEL, revocation.message())


async def redis_messages(client: aioredis.Redis) -> AsyncGenerator[str, None]:
    """ "" once subscribed, then each revocation message; raises RedisError when the
    link drops."""
    async with contextlib.aclosing(redis_listen.messages(client, REDIS_CHANNEL)) as messages:
        async for message in messages:
            yield message
