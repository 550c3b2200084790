"""The `keygate` CLI against real Postgres: orgs, and the life of a key (create, list,
show, update, revoke, roll), checked in the command output and in the database."""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.config import load_config
from gateway.keys.format import parse_key
from gateway.keys.hashing import SecretHasher
from gateway.keys.service import KeyService
from gateway.store.db import Database
from tests.support.cli import Cli
from tests.support.clock import Clock
from tests.support.configs import TEST_CONFIG
from tests.support.db import Db
from tests.support.keys import ACTOR
from tests.support.spec import KEY_FIELDS

PREFIXES = {"live": "kg_live_", "test": "kg_test_"}
PRINCIPAL = f"cli:{getpass.getuser()}"


def ts(text: str) -> datetime:
    assert text.endswith("Z"), text  # RFC 3339 in UTC
    return datetime.fromisoformat(text)


def close_to(value: datetime, expected: datetime, slack: float = 10.0) -> bool:
    return abs((value - expected).total_seconds()) <= slack


def create(
    cli: Cli, *extra: str, org: str = "acme", name: str = "ci", scopes: tuple[str, ...] = ("read",)
) -> dict[str, Any]:
    args = ["keys", "create", "--org", org, "--name", name, "--json", *extra]
    for s in scopes:
        args += ["--scope", s]
    result: dict[str, Any] = cli.ok(*args).json()
    return result


@pytest.fixture
def acme(cli: Cli) -> Cli:
    cli.ok("orgs", "create", "acme", "--name", "Acme Inc")
    return cli


# --- orgs ------------------------------------------------------------------------------


def test_orgs_create_and_list(cli: Cli, db: Db) -> None:
    created = cli.ok("orgs", "create", "globex", "--name", "Globex Corp")
    assert "globex" in created.out
    made = cli.ok("orgs", "create", "acme", "--json").json()
    assert made["slug"] == "acme" and made["name"] == "acme"  # name defaults to the slug
    assert close_to(ts(made["created_at"]), datetime.now(UTC))

    listed = cli.ok("orgs", "list", "--json").json()
    assert [(o["slug"], o["name"]) for o in listed["items"]] == [
        ("acme", "acme"),
        ("globex", "Globex Corp"),
    ]
    table = cli.ok("orgs", "list").out.splitlines()
    assert table[0].split() == ["SLUG", "NAME", "CREATED"]
    assert table[1].startswith("acme") and "Globex Corp" in table[2]
    assert [r["slug"] for r in db.fetch("SELECT slug FROM orgs ORDER BY slug")] == [
        "acme",
        "globex",
    ]


def test_json_option_is_accepted_before_the_command(acme: Cli) -> None:
    assert acme.ok("--json", "orgs", "list").json()["items"][0]["slug"] == "acme"


def test_empty_org_list(cli: Cli) -> None:
    assert cli.ok("orgs", "list", "--json").json() == {"items": []}


# --- create ----------------------------------------------------------------------------


def test_create_prints_the_full_key_once_with_a_warning(acme: Cli, db: Db) -> None:
    result = acme.ok(
        "keys", "create", "--org", "acme", "--name", "ci", "--scope", "read", "--scope", "send"
    )
    keys = [w for w in result.out.split() if w.startswith("kg_live_") and len(w) > 40]
    assert len(keys) == 1
    parsed = parse_key(keys[0], PREFIXES)
    assert parsed.env == "live"
    assert parsed.display_prefix in result.out
    assert "shown only once" in result.err and keys[0] not in result.err
    row = db.key_row(parsed.key_id)
    assert (row["org"], row["name"], row["scopes"], row["env"]) == (
        "acme",
        "ci",
        ["read", "send"],
        "live",
    )
    # The stored hash is an argon2id hash of the secret part and nothing else.
    hasher = SecretHasher(load_config(str(TEST_CONFIG)).keys.argon2)
    try:
        assert row["secret_hash"].startswith("$argon2id$")
        assert hasher.verify(row["secret_hash"], parsed.secret)
        assert not hasher.verify(row["secret_hash"], keys[0])
    finally:
        hasher.close()
    # It cannot be read again.
    assert parsed.secret not in acme.ok("keys", "show", parsed.key_id, "--json").out
    assert parsed.secret not in acme.ok("keys", "list", "--org", "acme", "--json").out


def test_create_json_gives_key_and_secret(acme: Cli) -> None:
    result = acme.ok(
        "keys",
        "create",
        "--org",
        "acme",
        "--name",
        "ci",
        "--scope",
        "send",
        "--scope",
        "read",
        "--scope",
        "read",
        "--metadata",
        '{"team": "a", "n": 1}',
        "--json",
    )
    data = result.json()
    assert set(data) == {"key", "secret"}
    key = data["key"]
    assert set(key) == KEY_FIELDS
    parsed = parse_key(data["secret"], PREFIXES)
    assert key["id"] == parsed.key_id and key["display_prefix"] == parsed.display_prefix
    assert key["org"] == "acme" and key["name"] == "ci" and key["env"] == "live"
    assert key["scopes"] == ["read", "send"]  # sorted, de-duplicated
    assert key["status"] == "active"
    assert key["created_by"] == PRINCIPAL
    assert close_to(ts(key["created_at"]), datetime.now(UTC))
    assert key["metadata"] == {"team": "a", "n": 1}
    for absent in (
        "expires_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
        "rolled_from",
        "rate_limit",
    ):
        assert key[absent] is None
    assert "only once" in result.err


def test_create_test_env_key_with_expiry(acme: Cli, db: Db) -> None:
    data = create(acme, "--env", "test", "--expires-in", "30d")
    assert data["secret"].startswith("kg_test_")
    assert parse_key(data["secret"], PREFIXES).env == "test"
    assert data["key"]["env"] == "test"
    expires = ts(data["key"]["expires_at"])
    assert expires - ts(data["key"]["created_at"]) == timedelta(days=30)
    assert db.key_row(data["key"]["id"])["expires_at"] == expires

    at = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    data = create(acme, "--expires-at", at.isoformat().replace("+00:00", "Z"))
    assert ts(data["key"]["expires_at"]) == at


# --- list and show ---------------------------------------------------------------------


def test_list_newest_first_with_status_filter(acme: Cli) -> None:
    ids = [create(acme, name=f"k{i}")["key"]["id"] for i in range(4)]
    acme.ok("keys", "revoke", ids[1])
    listed = acme.ok("keys", "list", "--org", "acme", "--json").json()["items"]
    assert [k["id"] for k in listed] == ids[::-1]
    active = acme.ok("keys", "list", "--org", "acme", "--status", "active", "--json").json()[
        "items"
    ]
    assert [k["id"] for k in active] == [ids[3], ids[2], ids[0]]
    revoked = acme.ok("keys", "list", "--org", "acme", "--status", "revoked", "--json").json()[
        "items"
    ]
    assert [(k["id"], k["status"]) for k in revoked] == [(ids[1], "revoked")]
    assert acme.ok("keys", "list", "--org", "acme", "--status", "expired", "--json").json() == {
        "items": []
    }
    limited = acme.ok("keys", "list", "--org", "acme", "--limit", "2", "--json").json()["items"]
    assert [k["id"] for k in limited] == [ids[3], ids[2]]

    table = acme.ok("keys", "list", "--org", "acme").out.splitlines()
    assert table[0].split()[:4] == ["KEY", "NAME", "STATUS", "ENV"]
    assert [line.split()[0] for line in table[1:]] == [f"kg_live_{i}" for i in ids[::-1]]
    assert [line.split()[2] for line in table[1:]] == ["active", "active", "revoked", "active"]


def test_list_other_orgs_keys_are_not_shown(acme: Cli) -> None:
    acme.ok("orgs", "create", "globex")
    mine = create(acme)["key"]["id"]
    create(acme, org="globex")
    assert [
        k["id"] for k in acme.ok("keys", "list", "--org", "acme", "--json").json()["items"]
    ] == [mine]


def test_show_by_id_and_by_display_prefix(acme: Cli) -> None:
    key = create(acme, "--metadata", '{"a": [1, 2]}')["key"]
    by_id = acme.ok("keys", "show", key["id"], "--json").json()
    by_prefix = acme.ok("keys", "show", key["display_prefix"], "--json").json()
    assert by_id == by_prefix == key
    text = acme.ok("keys", "show", key["display_prefix"]).out
    lines = dict(line.split(None, 1) for line in text.splitlines())
    assert lines["id"] == key["id"] and lines["org"] == "acme" and lines["status"] == "active"
    assert (
        lines["scopes"] == "read"
        and lines["expires_at"] == "-"
        and lines["metadata"] == '{"a": [1, 2]}'
    )
    # The right id with another prefix is not this key.
    wrong = acme("keys", "show", "kg_test_" + key["id"])
    assert wrong.code == 1 and "unknown key" in wrong.err


# --- update ----------------------------------------------------------------------------


def test_update_name_and_scopes(acme: Cli, db: Db) -> None:
    key = create(acme, scopes=("read",))["key"]
    renamed = acme.ok("keys", "update", key["id"], "--name", "deploy bot", "--json").json()
    assert renamed["name"] == "deploy bot" and renamed["scopes"] == ["read"]
    rescoped = acme.ok(
        "keys",
        "update",
        key["display_prefix"],
        "--scope",
        "workflows:*",
        "--scope",
        "send",
        "--json",
    ).json()
    assert rescoped["scopes"] == ["send", "workflows:*"] and rescoped["name"] == "deploy bot"
    row = db.key_row(key["id"])
    assert (row["name"], row["scopes"], row["version"]) == (
        "deploy bot",
        ["send", "workflows:*"],
        3,
    )
    assert rescoped["id"] == key["id"] and rescoped["created_at"] == key["created_at"]
    text = acme.ok("keys", "update", key["id"], "--name", "again").out
    assert "again" in text


# --- revoke ----------------------------------------------------------------------------


def test_revoke_with_reason(acme: Cli, db: Db) -> None:
    key = create(acme)["key"]
    revoked = acme.ok("keys", "revoke", key["id"], "--reason", "leaked in CI logs", "--json").json()
    assert revoked["status"] == "revoked"
    assert revoked["revoked_by"] == PRINCIPAL and revoked["revoke_reason"] == "leaked in CI logs"
    assert close_to(ts(revoked["revoked_at"]), datetime.now(UTC))
    row = db.key_row(key["id"])
    assert (
        row["revoked_at"] == ts(revoked["revoked_at"])
        and row["revoke_reason"] == "leaked in CI logs"
    )
    assert acme.ok("keys", "show", key["id"], "--json").json()["status"] == "revoked"
    other = create(acme)["key"]
    assert acme.ok("keys", "revoke", other["display_prefix"]).out.strip() == (
        f"Revoked key {other['display_prefix']}"
    )


def test_revoking_a_revoked_key_succeeds_and_changes_nothing(acme: Cli, db: Db) -> None:
    """Idempotent (SPEC §6): exit 0, the key as it was, no second audit entry."""
    key = create(acme)["key"]
    first = acme.ok("keys", "revoke", key["id"], "--reason", "first", "--json").json()
    row = db.key_row(key["id"])
    audited = db.fetch("SELECT * FROM audit_log WHERE key_id = $1 ORDER BY id", key["id"])

    again = acme.ok("keys", "revoke", key["display_prefix"], "--reason", "second", "--json")
    assert again.json() == first and again.err == ""
    text = acme.ok("keys", "revoke", key["id"])
    assert text.out.strip() == (
        f"Key {key['display_prefix']} was already revoked at {first['revoked_at']} "
        f"by {PRINCIPAL}; nothing changed"
    )
    assert db.key_row(key["id"]) == row
    assert db.fetch("SELECT * FROM audit_log WHERE key_id = $1 ORDER BY id", key["id"]) == audited
    assert [e["action"] for e in audited] == ["key.create", "key.revoke"]


# --- roll ------------------------------------------------------------------------------


def test_roll_issues_a_replacement_and_the_old_key_expires_after_grace(acme: Cli, db: Db) -> None:
    old = create(
        acme,
        "--metadata",
        '{"team": "payments"}',
        "--env",
        "test",
        name="billing",
        scopes=("read", "workflows:*"),
    )["key"]
    rolled = acme.ok("keys", "roll", old["id"], "--json")
    data = rolled.json()
    assert set(data) == {"key", "secret", "previous"}
    assert "only once" in rolled.err
    new, previous = data["key"], data["previous"]
    parsed = parse_key(data["secret"], PREFIXES)
    assert parsed.key_id == new["id"] != old["id"]
    for field in ("org", "name", "scopes", "metadata", "env"):
        assert new[field] == old[field], field
    assert new["rolled_from"] == old["id"] and new["status"] == "active"
    assert new["expires_at"] is None  # the old key had no expiry
    assert previous["id"] == old["id"] and previous["status"] == "active"
    assert previous["revoked_at"] is None
    assert close_to(ts(previous["expires_at"]), datetime.now(UTC) + timedelta(hours=24))
    assert db.key_row(old["id"])["expires_at"] == ts(previous["expires_at"])
    assert db.key_row(new["id"])["rolled_from"] == old["id"]


def test_roll_text_output(acme: Cli) -> None:
    old = create(acme)["key"]
    result = acme.ok("keys", "roll", old["display_prefix"], "--grace", "1h")
    secrets_printed = [w for w in result.out.split() if w.startswith("kg_live_") and len(w) > 40]
    assert len(secrets_printed) == 1
    assert f"The previous key {old['display_prefix']} stays valid until" in result.out
    assert "shown only once" in result.err


def test_roll_with_zero_grace_revokes_at_once(acme: Cli) -> None:
    old = create(acme)["key"]
    data = acme.ok("keys", "roll", old["id"], "--grace", "0s", "--json").json()
    assert data["previous"]["status"] == "revoked"
    assert data["previous"]["revoked_by"] == PRINCIPAL
    assert data["key"]["status"] == "active"
    assert acme.ok("keys", "show", old["id"], "--json").json()["status"] == "revoked"


def test_roll_keeps_the_lifetime_and_never_extends_the_old_expiry(acme: Cli) -> None:
    old = create(acme, "--expires-in", "1h")["key"]
    data = acme.ok("keys", "roll", old["id"], "--grace", "24h", "--json").json()
    new, previous = data["key"], data["previous"]
    # The new key lives as long as the old one was meant to, counted from now.
    assert ts(new["expires_at"]) - ts(new["created_at"]) == timedelta(hours=1)
    # The old key's grace is capped by its own original expiry.
    assert previous["expires_at"] == old["expires_at"]


def test_roll_with_explicit_expiry(acme: Cli) -> None:
    old = create(acme, "--expires-in", "1h")["key"]
    new = acme.ok("keys", "roll", old["id"], "--expires-in", "7d", "--json").json()["key"]
    assert ts(new["expires_at"]) - ts(new["created_at"]) == timedelta(days=7)


# --- status from the clock, and the service's cursor pagination -------------------------


def _make_with_clock(url: str, clock: Clock, **kwargs: Any) -> str:
    async def run() -> str:
        config = load_config(str(TEST_CONFIG))
        database = Database(url)
        hasher = SecretHasher(config.keys.argon2, threads=1)
        try:
            svc = KeyService(database, config.keys, hasher, clock=clock)
            created = await svc.create_key(ACTOR, "acme", "old", ["read"], **kwargs)
            return created.key.id
        finally:
            await database.close()
            hasher.close()

    return asyncio.run(run())


def test_expired_key_status(acme: Cli, db: Db) -> None:
    # Created two hours ago with a one-hour lifetime: expired an hour ago.
    past = Clock(datetime.now(UTC) - timedelta(hours=2))
    expired = _make_with_clock(db.url, past, expires_in=3600)
    live = create(acme, "--expires-in", "1h")["key"]["id"]
    shown = acme.ok("keys", "show", expired, "--json").json()
    assert shown["status"] == "expired" and shown["revoked_at"] is None
    by_status = {
        status: [
            k["id"]
            for k in acme.ok("keys", "list", "--org", "acme", "--status", status, "--json").json()[
                "items"
            ]
        ]
        for status in ("active", "expired", "revoked", "all")
    }
    assert by_status == {
        "active": [live],
        "expired": [expired],
        "revoked": [],
        "all": [live, expired],
    }
    # An expired key can still be revoked, and then it counts as revoked.
    acme.ok("keys", "revoke", expired)
    assert acme.ok("keys", "show", expired, "--json").json()["status"] == "revoked"


async def test_roll_lifetime_rule_with_a_clock(service: KeyService, clock: Clock) -> None:
    await service.create_org(ACTOR, "acme")
    t0 = clock.now
    first = (await service.create_key(ACTOR, "acme", "k", ["read"], expires_in=30 * 86400)).key
    assert first.expires_at == t0 + timedelta(days=30)

    t1 = clock.advance(days=10)
    rolled = await service.roll_key(ACTOR, first.id, grace=86400)
    assert rolled.key.created_at == t1
    assert rolled.key.expires_at == t1 + timedelta(days=30)  # same lifetime, from now
    assert rolled.previous.expires_at == t1 + timedelta(days=1)
    assert rolled.previous.status(t1) == "active"
    assert rolled.previous.status(t1 + timedelta(days=1)) == "expired"

    # A grace longer than what is left of the old key's life stops at its own expiry.
    clock.advance(days=25)
    again = await service.roll_key(ACTOR, rolled.key.id, grace=60 * 86400)
    assert again.previous.expires_at == t1 + timedelta(days=30)
    assert again.key.expires_at == clock.now + timedelta(days=30)
    assert again.key.rolled_from == rolled.key.id

    # Rolling an expired (not revoked) key works; its expiry does not move.
    clock.advance(days=40)
    late = await service.roll_key(ACTOR, again.previous.id, grace=3600)
    assert late.previous.expires_at == t1 + timedelta(days=30)
    assert late.key.status(clock.now) == "active"


async def test_cursor_pagination(service: KeyService, clock: Clock) -> None:
    await service.create_org(ACTOR, "acme")
    made = []
    for i in range(7):
        if i % 3 == 0:
            clock.advance(seconds=1)  # some keys share a created_at: ties break on the id
        made.append((await service.create_key(ACTOR, "acme", f"k{i}", ["read"])).key)
    await service.revoke_key(ACTOR, made[2].id)
    expected = [k.id for k in sorted(made, key=lambda k: (k.created_at, k.id), reverse=True)]

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await service.list_keys(ACTOR, "acme", limit=3, cursor=cursor)
        assert len(page.items) <= 3
        seen += [k.id for k in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected and pages == 3

    active: list[str] = []
    cursor = None
    while True:
        page = await service.list_keys(ACTOR, "acme", status="active", limit=2, cursor=cursor)
        active += [k.id for k in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert active == [i for i in expected if i != made[2].id]

    exact = await service.list_keys(ACTOR, "acme", limit=7)
    assert len(exact.items) == 7 and exact.next_cursor is None


@pytest.mark.parametrize("cursor", ["garbage!", "e30", "eyJjIjogMX0", "W10"])
async def test_bad_cursor_is_invalid_input(service: KeyService, cursor: str) -> None:
    from gateway.keys.errors import InvalidInput

    await service.create_org(ACTOR, "acme")
    with pytest.raises(InvalidInput, match="cursor"):
        await service.list_keys(ACTOR, "acme", cursor=cursor)
