"""The audit log: an entry for every change, as `keygate audit` shows it, and a table
the database itself keeps append-only."""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from gateway.keys.models import Actor
from gateway.keys.service import KeyService
from tests.support.cli import Cli
from tests.support.clock import Clock
from tests.support.db import Db

PRINCIPAL = f"cli:{getpass.getuser()}"


def audit(cli: Cli, *extra: str, org: str = "acme") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cli.ok("audit", "--org", org, "--json", *extra).json()["items"]
    return items


def newest(cli: Cli) -> dict[str, Any]:
    return audit(cli)[0]


def test_every_mutation_is_audited(cli: Cli) -> None:
    cli.ok("orgs", "create", "acme", "--name", "Acme")
    entry = newest(cli)
    assert (entry["action"], entry["principal"], entry["org"], entry["key_id"]) == (
        "org.create",
        PRINCIPAL,
        "acme",
        None,
    )

    key = cli.ok(
        "keys", "create", "--org", "acme", "--name", "ci", "--scope", "read", "--json"
    ).json()["key"]
    entry = newest(cli)
    assert (entry["action"], entry["principal"], entry["key_id"]) == (
        "key.create",
        PRINCIPAL,
        key["id"],
    )
    assert entry["new_scopes"] == ["read"] and entry["old_scopes"] is None
    assert entry["details"]["name"] == "ci" and entry["details"]["env"] == "live"
    assert abs((datetime.fromisoformat(entry["at"]) - datetime.now(UTC)).total_seconds()) < 10

    cli.ok("keys", "update", key["id"], "--scope", "read", "--scope", "send")
    entry = newest(cli)
    assert (entry["action"], entry["principal"], entry["key_id"]) == (
        "key.update",
        PRINCIPAL,
        key["id"],
    )
    assert (entry["old_scopes"], entry["new_scopes"]) == (["read"], ["read", "send"])

    cli.ok("keys", "update", key["id"], "--name", "renamed")
    entry = newest(cli)
    assert entry["action"] == "key.update"
    assert entry["old_scopes"] is None and entry["new_scopes"] is None  # scopes unchanged
    assert entry["details"] == {"old_name": "ci", "new_name": "renamed"}

    rolled = cli.ok("keys", "roll", key["id"], "--grace", "1h", "--json").json()
    new_id = rolled["key"]["id"]
    create_entry, roll_entry = audit(cli)[:2]
    assert (roll_entry["action"], roll_entry["key_id"], roll_entry["principal"]) == (
        "key.roll",
        key["id"],
        PRINCIPAL,
    )
    assert roll_entry["details"]["new_key_id"] == new_id
    assert roll_entry["details"]["grace_seconds"] == 3600
    assert (create_entry["action"], create_entry["key_id"]) == ("key.create", new_id)
    assert create_entry["details"]["rolled_from"] == key["id"]
    assert create_entry["new_scopes"] == ["read", "send"]

    cli.ok("keys", "revoke", new_id, "--reason", "done")
    entry = newest(cli)
    assert (entry["action"], entry["principal"], entry["key_id"]) == (
        "key.revoke",
        PRINCIPAL,
        new_id,
    )
    assert entry["details"] == {"reason": "done"}

    actions = [e["action"] for e in audit(cli)]
    assert actions == [
        "key.revoke",
        "key.create",
        "key.roll",
        "key.update",
        "key.update",
        "key.create",
        "org.create",
    ]
    ids = [e["id"] for e in audit(cli)]
    assert ids == sorted(ids, reverse=True)


def test_reads_are_not_audited(cli: Cli, db: Db) -> None:
    cli.ok("orgs", "create", "acme")
    key = cli.ok(
        "keys", "create", "--org", "acme", "--name", "ci", "--scope", "read", "--json"
    ).json()
    before = db.counts()["audit"]
    cli.ok("keys", "list", "--org", "acme")
    cli.ok("keys", "show", key["key"]["id"])
    cli.ok("orgs", "list")
    cli.ok("audit", "--org", "acme")
    assert db.counts()["audit"] == before == 2


def test_audit_filters_limit_and_text_output(cli: Cli) -> None:
    cli.ok("orgs", "create", "acme")
    cli.ok("orgs", "create", "globex")
    a = cli.ok(
        "keys", "create", "--org", "acme", "--name", "a", "--scope", "read", "--json"
    ).json()["key"]
    b = cli.ok(
        "keys", "create", "--org", "acme", "--name", "b", "--scope", "read", "--json"
    ).json()["key"]
    cli.ok("keys", "create", "--org", "globex", "--name", "g", "--scope", "read")
    cli.ok("keys", "update", a["id"], "--scope", "send")
    cli.ok("keys", "revoke", b["id"])

    assert {e["org"] for e in audit(cli)} == {"acme"}
    assert len(audit(cli, org="globex")) == 2
    for ref in (a["id"], a["display_prefix"]):
        assert [e["action"] for e in audit(cli, "--key", ref)] == ["key.update", "key.create"]
    assert [e["key_id"] for e in audit(cli, "--action", "key.revoke")] == [b["id"]]
    page = cli.ok("audit", "--org", "acme", "--limit", "2", "--json").json()
    assert [e["action"] for e in page["items"]] == ["key.revoke", "key.update"]
    assert page["next_cursor"]
    assert cli.ok("audit", "--org", "acme", "--json").json()["next_cursor"] is None

    table = cli.ok("audit", "--org", "acme").out.splitlines()
    assert table[0].split() == ["TIME", "ACTION", "KEY", "PRINCIPAL", "CHANGE"]
    assert "key.update" in table[2] and "scopes read -> send" in table[2]
    assert PRINCIPAL in table[1]


async def test_service_records_request_context_and_pages(service: KeyService, clock: Clock) -> None:
    actor = Actor(
        principal="admin:root",
        client_ip="203.0.113.7",
        request_id="req-123",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    await service.create_org(actor, "acme")
    key = (await service.create_key(actor, "acme", "k", ["read"])).key
    for i in range(4):
        await service.update_key(actor, key.id, name=f"n{i}")
    entries = []
    cursor = None
    while True:
        page = await service.list_audit(actor, "acme", limit=2, cursor=cursor)
        entries += page.items
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [e.action for e in entries] == ["key.update"] * 4 + ["key.create", "org.create"]
    for e in entries:
        assert (e.principal, e.client_ip, e.request_id, e.traceparent) == (
            "admin:root",
            "203.0.113.7",
            "req-123",
            actor.traceparent,
        )
        assert e.at == clock.now


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_log SET principal = 'someone-else'",
        "UPDATE audit_log SET old_scopes = NULL WHERE action = 'key.create'",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE action = 'org.create'",
    ],
)
def test_audit_log_is_append_only(cli: Cli, db: Db, sql: str) -> None:
    cli.ok("orgs", "create", "acme")
    cli.ok("keys", "create", "--org", "acme", "--name", "ci", "--scope", "read")
    before = db.fetch("SELECT * FROM audit_log ORDER BY id")
    assert len(before) == 2

    async def tamper() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            with pytest.raises(asyncpg.exceptions.RaiseError, match="append-only"):
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(tamper())
    assert db.fetch("SELECT * FROM audit_log ORDER BY id") == before
    # Appending still works.
    cli.ok("keys", "create", "--org", "acme", "--name", "ci2", "--scope", "read")
    assert len(db.fetch("SELECT * FROM audit_log")) == 3
