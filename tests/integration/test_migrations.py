"""`keygate migrate`: idempotent, safe to run twice at once, and building the schema the
code expects."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from typing import Any

import asyncpg
import pytest

from gateway.cli import main
from gateway.store.db import Database
from gateway.store.migrate import applied_versions, bundled_migrations, migrate
from tests.support.cli import Cli
from tests.support.db import Db


def test_bundled_migrations_are_numbered_in_order() -> None:
    found = bundled_migrations()
    assert found, "no migrations shipped"
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "initial"


def test_migrate_is_idempotent(cli: Cli, db: Db) -> None:
    cli.ok("orgs", "create", "acme")
    assert cli.ok("migrate").out == "database is up to date\n"
    assert cli.ok("migrate", "--json").json() == {"applied": []}
    assert db.counts()["orgs"] == 1  # nothing was reset
    rows = db.fetch("SELECT version, name FROM keygate_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in rows] == [
        (m.version, m.name) for m in bundled_migrations()
    ]


def test_migrate_a_fresh_database(
    cli: Cli, fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGATE_DATABASE_URL", fresh_database_url)
    names = [f"{m.version:04d}_{m.name}" for m in bundled_migrations()]
    first = cli.ok("migrate")
    assert first.out.splitlines() == [f"applied {n}" for n in names]
    assert cli.ok("migrate", "--json").json() == {"applied": []}
    fresh = Db(fresh_database_url)
    assert [r["version"] for r in fresh.fetch("SELECT version FROM keygate_migrations")] == [
        m.version for m in bundled_migrations()
    ]


def test_two_concurrent_migrate_commands(
    fresh_database_url: str, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGATE_DATABASE_URL", fresh_database_url)
    barrier = threading.Barrier(2)
    results: list[tuple[int, Any, str]] = []

    def run() -> None:
        out, err = io.StringIO(), io.StringIO()
        barrier.wait()
        code = main(["migrate", "--json"], out=out, err=err)
        results.append((code, out.getvalue(), err.getvalue()))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r[0] for r in results] == [0, 0], results
    applied = [json.loads(r[1])["applied"] for r in results]
    everything = [f"{m.version:04d}_{m.name}" for m in bundled_migrations()]
    assert sorted(applied[0] + applied[1]) == everything  # each applied exactly once
    counts = Db(fresh_database_url).fetch(
        "SELECT version, count(*) AS n FROM keygate_migrations GROUP BY version"
    )
    assert all(r["n"] == 1 for r in counts) and len(counts) == len(everything)


async def test_concurrent_migrations_in_one_process(fresh_database_url: str) -> None:
    dbs = [Database(fresh_database_url) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(d) for d in dbs))
        assert sorted(m.version for batch in applied for m in batch) == [
            m.version for m in bundled_migrations()
        ]
        assert await applied_versions(dbs[0]) == [m.version for m in bundled_migrations()]
    finally:
        for d in dbs:
            await d.close()


# --- the schema --------------------------------------------------------------------------


def columns(db: Db, table: str) -> dict[str, tuple[str, str, bool]]:
    rows = db.fetch(
        """SELECT column_name, data_type, udt_name, is_nullable FROM information_schema.columns
           WHERE table_schema = 'public' AND table_name = $1""",
        table,
    )
    return {
        r["column_name"]: (r["data_type"], r["udt_name"], r["is_nullable"] == "YES") for r in rows
    }


def test_api_keys_has_every_field_of_a_key(db: Db) -> None:
    cols = columns(db, "api_keys")
    expected = {
        "id": "text",
        "org": "text",
        "name": "text",
        "prefix": "text",
        "env": "text",
        "secret_hash": "text",
        "scopes": "_text",
        "metadata": "jsonb",
        "created_at": "timestamptz",
        "created_by": "text",
        "expires_at": "timestamptz",
        "last_used_at": "timestamptz",
        "revoked_at": "timestamptz",
        "revoked_by": "text",
        "revoke_reason": "text",
        "rolled_from": "text",
        "version": "int8",
        "rate_limit_requests": "int4",
        "rate_limit_per": "int4",
    }
    # Later migrations may add columns; every field of a key must be there, typed right.
    assert {name: cols[name][1] for name in expected if name in cols} == expected
    assert cols["scopes"][0] == "ARRAY"
    nullable = {name for name, (_, _, null) in cols.items() if null and name in expected}
    assert nullable == {
        "expires_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
        "rolled_from",
        "rate_limit_requests",
        "rate_limit_per",
    }
    # No column that could hold a plaintext key.
    assert not {"key", "secret", "plaintext", "full_key"} & set(cols)


def test_indexes(db: Db) -> None:
    rows = db.fetch(
        """SELECT c.relname AS name, i.indisunique AS uniq, i.indisprimary AS pk,
                  t.relname AS tbl,
                  array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
                        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
                        ORDER BY k.o) AS cols
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_class t ON t.oid = i.indrelid
           WHERE t.relname IN ('api_keys', 'audit_log', 'orgs')"""
    )
    indexes = [(r["tbl"], list(r["cols"]), r["uniq"]) for r in rows]
    assert ("api_keys", ["id"], True) in indexes  # unique key id
    assert any(t == "api_keys" and c[:2] == ["org", "created_at"] for t, c, _ in indexes)
    assert ("orgs", ["slug"], True) in indexes
    assert any(t == "audit_log" and c[0] == "org" for t, c, _ in indexes)


def test_audit_log_columns_and_trigger(db: Db) -> None:
    cols = columns(db, "audit_log")
    for name in (
        "at",
        "org",
        "key_id",
        "action",
        "principal",
        "old_scopes",
        "new_scopes",
        "client_ip",
        "request_id",
        "traceparent",
        "details",
    ):
        assert name in cols
    assert cols["old_scopes"][1] == cols["new_scopes"][1] == "_text"
    triggers = db.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal"
    )
    assert len(triggers) == 1


def test_database_checks_refuse_bad_rows(cli: Cli, db: Db) -> None:
    """The constraints back the service's rules: a bad slug or id cannot be stored."""

    async def attempt(sql: str) -> None:
        conn = await asyncpg.connect(db.url)
        try:
            with pytest.raises(asyncpg.exceptions.IntegrityConstraintViolationError):
                await conn.execute(sql)
        finally:
            await conn.close()

    cli.ok("orgs", "create", "acme")
    for sql in (
        "INSERT INTO orgs (slug, name) VALUES ('Bad_Slug', 'x')",
        "INSERT INTO api_keys (id, org, name, prefix, env, secret_hash, created_at, created_by)"
        " VALUES ('short', 'acme', 'n', 'kg_live_', 'live', '$argon2id$x', now(), 'me')",
        "INSERT INTO api_keys (id, org, name, prefix, env, secret_hash, created_at, created_by)"
        " VALUES ('abcdEFGH', 'acme', 'n', 'kg_live_', 'live', 'plaintext', now(), 'me')",
        "INSERT INTO api_keys (id, org, name, prefix, env, secret_hash, created_at, created_by)"
        " VALUES ('abcdEFGH', 'nope', 'n', 'kg_live_', 'live', '$argon2id$x', now(), 'me')",
        # A rate limit is both columns or neither, within the service's bounds
        # (1 to 1,000,000,000 requests; windows of 1s to 365d).
        *(
            "INSERT INTO api_keys (id, org, name, prefix, env, secret_hash, created_at,"
            " created_by, rate_limit_requests, rate_limit_per) VALUES ('abcdEFGH', 'acme',"
            f" 'n', 'kg_live_', 'live', '$argon2id$x', now(), 'me', {requests}, {per})"
            for requests, per in (
                ("100", "NULL"),
                ("NULL", "60"),
                ("0", "60"),
                ("1", "0"),
                ("1", "31536001"),
                ("1000000001", "60"),
            )
        ),
    ):
        asyncio.run(attempt(sql))

    async def largest_limit() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            await conn.execute(
                "INSERT INTO api_keys (id, org, name, prefix, env, secret_hash, created_at,"
                " created_by, rate_limit_requests, rate_limit_per) VALUES ('abcdEFGH', 'acme',"
                " 'n', 'kg_live_', 'live', '$argon2id$x', now(), 'me', 1000000000, 31536000)"
            )
        finally:
            await conn.close()

    asyncio.run(largest_limit())  # the bounds themselves are allowed
