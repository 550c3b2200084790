"""Fixtures for the foundation's integration tests: the service with a settable clock,
row counts, and throwaway databases in the session's PostgreSQL server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from gateway.config import load_config
from gateway.keys.hashing import SecretHasher
from gateway.keys.service import KeyService
from gateway.store.db import Database
from tests.support.clock import Clock
from tests.support.configs import TEST_CONFIG
from tests.support.db import Db, with_database
from tests.support.stores import Stores


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


@pytest.fixture
def db(clean_stores: Stores) -> Db:
    return Db(clean_stores.database_url)


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
