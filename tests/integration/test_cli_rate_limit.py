"""A key's own rate limit through the real `keygate` CLI: create, show, update, roll, audit,
and the one-line errors that name the field (exit 1, nothing written)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.cli import Cli
from tests.support.db import Db


@pytest.fixture
def acme(cli: Cli) -> Cli:
    cli.ok("orgs", "create", "acme")
    return cli


def create(cli: Cli, *extra: str) -> dict[str, Any]:
    data: dict[str, Any] = cli.ok(
        "keys", "create", "--org", "acme", "--name", "ci", "--scope", "read", "--json", *extra
    ).json()
    return data


def newest_audit(cli: Cli) -> dict[str, Any]:
    entry: dict[str, Any] = cli.ok("audit", "--org", "acme", "--json").json()["items"][0]
    return entry


def test_create_show_and_store_a_rate_limit(acme: Cli, db: Db) -> None:
    key = create(acme, "--rate-limit", "100/1m")["key"]
    assert key["rate_limit"] == {"requests": 100, "per": "1m"}
    assert acme.ok("keys", "show", key["id"], "--json").json()["rate_limit"] == key["rate_limit"]
    text = acme.ok("keys", "show", key["id"]).out
    assert any(line.split()[:2] == ["rate_limit", "100/1m"] for line in text.splitlines()), text
    row = db.key_row(key["id"])
    assert (row["rate_limit_requests"], row["rate_limit_per"]) == (100, 60)
    assert newest_audit(acme)["details"]["rate_limit"] == {"requests": 100, "per": "1m"}
    listed = acme.ok("keys", "list", "--org", "acme", "--json").json()["items"]
    assert [k["rate_limit"] for k in listed] == [{"requests": 100, "per": "1m"}]


def test_no_rate_limit_is_null(acme: Cli, db: Db) -> None:
    key = create(acme)["key"]
    assert key["rate_limit"] is None
    assert "rate_limit" not in newest_audit(acme)["details"]
    text = acme.ok("keys", "show", key["id"]).out
    assert any(line.split() == ["rate_limit", "-"] for line in text.splitlines()), text
    assert db.key_row(key["id"])["rate_limit_requests"] is None


def test_update_sets_changes_and_removes_it_audited(acme: Cli) -> None:
    key_id = create(acme)["key"]["id"]
    updated = acme.ok("keys", "update", key_id, "--rate-limit", "10/1h", "--json").json()
    assert updated["rate_limit"] == {"requests": 10, "per": "1h"}
    assert updated["scopes"] == ["read"] and updated["name"] == "ci"  # the rest is kept
    entry = newest_audit(acme)
    assert entry["action"] == "key.update"
    assert entry["details"] == {
        "old_rate_limit": None,
        "new_rate_limit": {"requests": 10, "per": "1h"},
    }
    assert entry["old_scopes"] is None  # scopes did not change

    acme.ok("keys", "update", key_id, "--rate-limit", "20/1h")
    assert newest_audit(acme)["details"] == {
        "old_rate_limit": {"requests": 10, "per": "1h"},
        "new_rate_limit": {"requests": 20, "per": "1h"},
    }
    # Changing something else leaves the limit alone.
    kept = acme.ok("keys", "update", key_id, "--name", "renamed", "--json").json()
    assert kept["rate_limit"] == {"requests": 20, "per": "1h"}
    assert newest_audit(acme)["details"] == {"old_name": "ci", "new_name": "renamed"}

    removed = acme.ok("keys", "update", key_id, "--rate-limit", "none", "--json").json()
    assert removed["rate_limit"] is None
    assert newest_audit(acme)["details"] == {
        "old_rate_limit": {"requests": 20, "per": "1h"},
        "new_rate_limit": None,
    }
    table = acme.ok("audit", "--org", "acme").out
    newest_line = table.splitlines()[1]
    assert "old_rate_limit=20/1h" in newest_line and "new_rate_limit=none" in newest_line, table


def test_roll_keeps_the_rate_limit(acme: Cli) -> None:
    old = create(acme, "--rate-limit", "5/1s")["key"]
    rolled = acme.ok("keys", "roll", old["id"], "--json").json()
    assert (
        rolled["key"]["rate_limit"]
        == rolled["previous"]["rate_limit"]
        == {"requests": 5, "per": "1s"}
    )
    assert rolled["key"]["rolled_from"] == old["id"]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("100/xyz", "invalid rate_limit.per: 'xyz' is not a duration"),
        ("0/1m", "invalid rate_limit.requests: 0 is not a request count"),
        ("5/500ms", "invalid rate_limit.per: '500ms' is shorter than the smallest window, 1s"),
        ("5/1.5s", "invalid rate_limit.per: '1.5s' is not a whole number of seconds"),
        ("100", "invalid rate_limit: '100' is not a rate limit; write REQUESTS/WINDOW"),
        ("lots", "invalid rate_limit: 'lots' is not a rate limit"),
    ],
)
def test_bad_rate_limits_are_one_line_errors_and_write_nothing(
    acme: Cli, db: Db, value: str, says: str
) -> None:
    key_id = create(acme)["key"]["id"]
    before = db.counts()
    for args in (
        [
            "keys",
            "create",
            "--org",
            "acme",
            "--name",
            "x",
            "--scope",
            "read",
            "--rate-limit",
            value,
        ],
        ["keys", "update", key_id, "--rate-limit", value],
    ):
        result = acme(*args)
        assert result.code == 1, result
        assert result.out == ""
        assert result.err.count("\n") == 1 and result.err.startswith("keygate: error: ")
        assert says in result.err, result.err
    assert db.counts() == before
    assert db.key_row(key_id)["rate_limit_requests"] is None


def test_help_describes_the_option(cli: Cli) -> None:
    for action in ("create", "update"):
        result = cli("keys", action, "--help")
        assert result.code == 0
        assert "--rate-limit" in result.out and "100/1m" in result.out
    assert "none removes it" in " ".join(cli("keys", "update", "--help").out.split())
