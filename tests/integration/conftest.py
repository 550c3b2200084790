"""Fixtures for the foundation's integration tests: the service with a settable clock,
row counts, and throwaway databases in the session's PostgreSQL server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from gateway.config import load_config
from gateway.keys.hashing import SecretHasher
from gateway.keys.models import Actor
from gateway.keys.service import KeyService
from gateway.store.db import Database
from tests.conftest import TEST_CONFIG
from tests.support.stores import Stores

ROOT_ACTOR = Actor(principal="test:root")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def service(clean_stores: Stores, clock: Clock) -> AsyncIterator[KeyService]:
    """The real service on the test database, reading time from `clock`."""
    config = load_config(str(TEST_CONFIG))
    db = Database(clean_stores.database_url)
    hasher = SecretHasher(config.keys.argon2, threads=1)
    try:
        yield KeyService(db, config.keys, hasher, clock=clock)
    finally:
        await db.close()
        hasher.close()


async def _query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        result: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return result
    finally:
        await conn.close()


@dataclass
class Db:
    """Direct SQL on the test database, for looking behind the service's back."""

    url: str

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return asyncio.run(_query(self.url, sql, *args))

    def counts(self) -> dict[str, int]:
        row = self.fetch(
            "SELECT (SELECT count(*) FROM orgs) AS orgs, (SELECT count(*) FROM api_keys) AS keys,"
            " (SELECT count(*) FROM audit_log) AS audit"
        )[0]
        return dict(row)

    def key_row(self, key_id: str) -> dict[str, Any]:
        rows = self.fetch("SELECT * FROM api_keys WHERE id = $1", key_id)
        assert len(rows) == 1
        return dict(rows[0])


@pytest.fixture
def db(clean_stores: Stores) -> Db:
    return Db(clean_stores.database_url)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
def fresh_database_url(stores: Stores) -> Iterator[str]:
    """An empty database (no schema) in the session's server, dropped afterwards."""
    name = "keygate_fresh_" + uuid.uuid4().hex[:12]
    admin_url = with_database(stores.database_url, "postgres")

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(stores.database_url, name)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
