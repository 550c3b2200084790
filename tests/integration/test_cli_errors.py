"""Bad input to the CLI: exit 1 (2 for usage errors), one line on stderr naming what is
wrong, and nothing written. Unreachable and unmigrated databases get clear messages."""

from __future__ import annotations

import os
from typing import Any

import pytest

from gateway.embedded import free_port
from gateway.keys.format import generate_key
from tests.support.cli import Cli
from tests.support.db import Db, with_database


def snapshot(db: Db) -> dict[str, list[dict[str, Any]]]:
    return {
        table: [dict(r) for r in db.fetch(f"SELECT * FROM {table} ORDER BY 1")]
        for table in ("orgs", "api_keys", "audit_log")
    }


def fill(args: list[str], values: dict[str, str]) -> list[str]:
    """Replace `{name}` arguments with the ids made by the `setup` fixture."""
    return [values[a[1:-1]] if a[:1] == "{" and a[1:-1] in values else a for a in args]


@pytest.fixture
def setup(cli: Cli) -> dict[str, str]:
    """An org with an active key and a revoked key."""
    cli.ok("orgs", "create", "acme")
    active = cli.ok(
        "keys", "create", "--org", "acme", "--name", "a", "--scope", "read", "--json"
    ).json()
    revoked = cli.ok(
        "keys", "create", "--org", "acme", "--name", "r", "--scope", "read", "--json"
    ).json()
    cli.ok("keys", "revoke", revoked["key"]["id"], "--reason", "test")
    return {
        "active": active["key"]["id"],
        "revoked": revoked["key"]["id"],
        "revoked_prefix": revoked["key"]["display_prefix"],
        "secret": active["secret"],
    }


USER_ERRORS = [
    # args, text the one-line message must contain
    (["keys", "create", "--org", "nope", "--name", "x", "--scope", "read"], "unknown org 'nope'"),
    (["keys", "list", "--org", "nope"], "unknown org 'nope'"),
    (["audit", "--org", "nope"], "unknown org 'nope'"),
    (["orgs", "create", "Bad_Slug"], "invalid org slug 'Bad_Slug'"),
    (["orgs", "create", "a"], "invalid org slug 'a'"),
    (["orgs", "create", "--", "-ab"], "invalid org slug '-ab'"),
    (["orgs", "create", "a" * 64], "invalid org slug"),
    (["orgs", "create", "ac me"], "invalid org slug 'ac me'"),
    (["orgs", "create", "acme"], "org 'acme' already exists"),
    (["keys", "create", "--org", "acme", "--name", "x", "--scope", ""], "scope"),
    (
        ["keys", "create", "--org", "acme", "--name", "x", "--scope", "read", "--scope", "a::b"],
        "'a::b'",
    ),
    (["keys", "create", "--org", "acme", "--name", "x", "--scope", "read write"], "'read write'"),
    (["keys", "create", "--org", "acme", "--name", "", "--scope", "read"], "name"),
    (["keys", "create", "--org", "acme", "--name", "x" * 201, "--scope", "read"], "name"),
    (
        [
            "keys",
            "create",
            "--org",
            "acme",
            "--name",
            "x",
            "--scope",
            "read",
            "--expires-at",
            "2001-01-01T00:00:00Z",
        ],
        "expires_at is in the past",
    ),
    (
        ["keys", "create", "--org", "acme", "--name", "x", "--scope", "read", "--expires-in", "0s"],
        "expires_in",
    ),
    (
        [
            "keys",
            "create",
            "--org",
            "acme",
            "--name",
            "x",
            "--scope",
            "read",
            "--expires-in",
            "99999999999h",
        ],
        "expires_in must be at most 100 years",
    ),
    (
        [
            "keys",
            "create",
            "--org",
            "acme",
            "--name",
            "x",
            "--scope",
            "read",
            "--metadata",
            '{"a": "\\u0000"}',
        ],
        "metadata",
    ),
    (["keys", "show", "abcdEFGH"], "unknown key 'abcdEFGH'"),
    (["keys", "show", "kg_live_abcdEFGH"], "unknown key 'kg_live_abcdEFGH'"),
    (["keys", "show", "nope"], "'nope' is not a key id"),
    (["keys", "update", "abcdEFGH", "--name", "x"], "unknown key 'abcdEFGH'"),
    (["keys", "update", "{active}", "--scope", "bad scope"], "'bad scope'"),
    (["keys", "update", "{active}"], "nothing to update"),
    (["keys", "revoke", "abcdEFGH"], "unknown key 'abcdEFGH'"),
    (["keys", "roll", "abcdEFGH"], "unknown key 'abcdEFGH'"),
    (["keys", "roll", "{revoked}"], "revoked key cannot be rolled"),
    (["keys", "list", "--org", "acme", "--limit", "0"], "--limit"),
    (["audit", "--org", "acme", "--limit", "0"], "limit"),
]


@pytest.mark.parametrize(
    ("args", "message"), USER_ERRORS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_user_errors(
    cli: Cli, db: Db, setup: dict[str, str], args: list[str], message: str
) -> None:
    args = fill(args, setup)
    before = snapshot(db)
    result = cli(*args)
    assert result.code == 1, result
    assert result.out == ""
    assert result.err.endswith("\n") and result.err.count("\n") == 1, result.err
    assert result.err.startswith("keygate: error: ")
    assert message in result.err
    assert "Traceback" not in result.err
    assert snapshot(db) == before


USAGE_ERRORS = [
    (
        [
            "keys",
            "create",
            "--org",
            "acme",
            "--name",
            "x",
            "--scope",
            "read",
            "--expires-in",
            "soon",
        ],
        "--expires-in: 'soon' is not a duration",
    ),
    (
        ["keys", "create", "--org", "acme", "--name", "x", "--scope", "read", "--expires-in", "5"],
        "--expires-in: '5' is not a duration",
    ),
    (["keys", "roll", "{active}", "--grace", "a day"], "--grace: 'a day' is not a duration"),
    (
        [
            "keys",
            "create",
            "--org",
            "acme",
            "--name",
            "x",
            "--scope",
            "read",
            "--expires-at",
            "2030-01-01T00:00:00",
        ],
        "--expires-at",
    ),
    (
        [
            "keys",
            "create",
            "--org",
            "acme",
            "--name",
            "x",
            "--scope",
            "read",
            "--expires-at",
            "tomorrow",
        ],
        "--expires-at: 'tomorrow' is not an ISO 8601 time",
    ),
    (
        [
            "keys",
            "create",
            "--org",
            "acme",
            "--name",
            "x",
            "--scope",
            "read",
            "--expires-in",
            "1d",
            "--expires-at",
            "2030-01-01T00:00:00Z",
        ],
        "not allowed with",
    ),
    (
        ["keys", "create", "--org", "acme", "--name", "x", "--scope", "read", "--metadata", "[1]"],
        "--metadata must be a JSON object",
    ),
    (
        ["keys", "create", "--org", "acme", "--name", "x", "--scope", "read", "--env", "prod"],
        "--env: invalid choice",
    ),
    (["keys", "create", "--org", "acme", "--name", "x"], "--scope"),
    (["keys", "list", "--org", "acme", "--status", "gone"], "--status: invalid choice"),
    (["keys", "frobnicate"], "invalid choice"),
    ([], "COMMAND"),
]


@pytest.mark.parametrize(
    ("args", "message"), USAGE_ERRORS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_usage_errors_exit_2_and_write_nothing(
    cli: Cli, db: Db, setup: dict[str, str], args: list[str], message: str
) -> None:
    args = fill(args, setup)
    before = snapshot(db)
    result = cli(*args)
    assert result.code == 2, result
    assert result.out == ""
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("keygate") and "error:" in last and message in last, result.err
    assert snapshot(db) == before


def test_help_exits_0_on_stdout(cli: Cli) -> None:
    result = cli("keys", "create", "--help")
    assert result.code == 0 and result.err == ""
    assert "--expires-in" in result.out and "--scope" in result.out


def test_a_full_key_given_as_key_id_is_not_echoed(cli: Cli, setup: dict[str, str]) -> None:
    for command in (["keys", "show"], ["keys", "revoke"], ["keys", "roll"], ["keys", "update"]):
        result = cli(
            *command, setup["secret"], *(["--name", "x"] if command[1] == "update" else [])
        )
        assert result.code == 1
        assert setup["secret"] not in result.err and setup["secret"][16:48] not in result.err
        assert "is not a key id" in result.err
    audit = cli("audit", "--org", "acme", "--key", setup["secret"])
    assert audit.code == 1 and setup["secret"] not in audit.err


def test_a_valid_looking_unknown_key_is_not_echoed(cli: Cli, setup: dict[str, str]) -> None:
    full, _ = generate_key("kg_live_")
    result = cli("keys", "show", full)
    assert result.code == 1 and full not in result.err


# --- the database is not there, or not ready --------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["orgs", "list"],
        ["orgs", "create", "acme"],
        ["keys", "list", "--org", "acme"],
        ["keys", "create", "--org", "acme", "--name", "x", "--scope", "read"],
        ["migrate"],
        ["audit", "--org", "acme"],
    ],
    ids=" ".join,
)
def test_unreachable_database(cli: Cli, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    port = free_port()
    monkeypatch.setenv(
        "KEYGATE_DATABASE_URL", f"postgresql://keygate:hunter2secret@127.0.0.1:{port}/keygate"
    )
    result = cli(*args)
    assert result.code == 1
    assert result.err.count("\n") == 1 and result.out == ""
    assert "hunter2secret" not in result.err
    assert (
        f"cannot reach the database at postgresql://keygate:***@127.0.0.1:{port}/keygate"
        in result.err
    )


@pytest.mark.parametrize(
    ("template", "shown"),
    [
        (
            "postgresql://keygate@127.0.0.1:{port}/keygate?password=hunter2secret&sslmode=disable",
            "postgresql://keygate@127.0.0.1:{port}/keygate?password=***&sslmode=disable",
        ),
        (
            "postgres://kg:hunter2secret@127.0.0.1:{port}/keygate?application_name=cli",
            "postgres://kg:***@127.0.0.1:{port}/keygate?application_name=cli",
        ),
    ],
)
def test_unreachable_database_password_forms(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, template: str, shown: str
) -> None:
    port = free_port()
    monkeypatch.setenv("KEYGATE_DATABASE_URL", template.format(port=port))
    result = cli("orgs", "list")
    assert result.code == 1
    assert "hunter2secret" not in result.err
    assert shown.format(port=port) in result.err


def test_unreachable_database_without_password(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("KEYGATE_DATABASE_URL", f"postgresql://keygate@127.0.0.1:{port}/keygate")
    result = cli("orgs", "list")
    assert result.code == 1
    assert f"postgresql://keygate@127.0.0.1:{port}/keygate" in result.err


def test_missing_database_is_named(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    url = with_database(os.environ["KEYGATE_DATABASE_URL"], "no_such_db")
    monkeypatch.setenv("KEYGATE_DATABASE_URL", url)
    result = cli("orgs", "list")
    assert result.code == 1 and result.err.count("\n") == 1
    assert "no_such_db" in result.err and "does not exist" in result.err


def test_unmigrated_database_says_to_migrate(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, fresh_database_url: str, db: Db
) -> None:
    monkeypatch.setenv("KEYGATE_DATABASE_URL", fresh_database_url)
    for args in (["orgs", "list"], ["orgs", "create", "acme"], ["keys", "list", "--org", "acme"]):
        result = cli(*args)
        assert result.code == 1, result
        assert result.err.count("\n") == 1
        assert "run `keygate migrate`" in result.err
    cli.ok("migrate")
    cli.ok("orgs", "create", "acme")
    assert cli.ok("orgs", "list", "--json").json()["items"][0]["slug"] == "acme"
    assert db.counts()["orgs"] == 0  # that was another database


def test_unreachable_redis_does_not_fail_a_change(
    cli: Cli, db: Db, setup: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGATE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    result = cli("keys", "revoke", setup["active"])
    assert result.code == 0, result
    assert db.key_row(setup["active"])["revoked_at"] is not None
