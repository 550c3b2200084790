"""Direct SQL on a test database, for looking behind the service's back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """One query on a connection of its own."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


@dataclass
class Db:
    """Direct SQL on the test database, from synchronous test code."""

    url: str

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return asyncio.run(fetch(self.url, sql, *args))

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


def with_database(url: str, name: str) -> str:
    """`url` with another database name."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))
