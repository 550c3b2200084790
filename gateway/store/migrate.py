"""Forward-only SQL migrations, applied in order, each in its own transaction.

A session-level advisory lock serialises concurrent migrators (two instances starting at
once): the second waits, then finds nothing left to apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from gateway.store.db import Database, NotMigrated

_LOCK_ID = 0x6B657967617465  # "keygate"
_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """The migrations shipped in gateway/store/migrations, ordered by version."""
    found = []
    for entry in resources.files("gateway.store").joinpath("migrations").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    return found


async def migrate(db: Database) -> list[Migration]:
    """Apply what is not applied yet; return what this call applied."""
    applied_now = []
    async with db.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS keygate_migrations (
                       version     integer PRIMARY KEY,
                       name        text NOT NULL,
                       applied_at  timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                r["version"] for r in await conn.fetch("SELECT version FROM keygate_migrations")
            }
            for migration in bundled_migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO keygate_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                applied_now.append(migration)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now


async def applied_versions(db: Database) -> list[int]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT version FROM keygate_migrations ORDER BY version")
    return [r["version"] for r in rows]


async def pending_migrations(db: Database) -> list[Migration]:
    """Bundled migrations the database has not applied yet."""
    try:
        done = set(await applied_versions(db))
    except NotMigrated:  # not even the migrations table yet
        done = set()
    return [m for m in bundled_migrations() if m.version not in done]
