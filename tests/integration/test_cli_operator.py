"""The operator's commands through the real `keygate` process against real stores:
--version, help on every option, `audit --cursor`, `orgs show` and `keys verify`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from typing import Any

import pytest

from gateway.cli import build_parser
from gateway.keys.format import base62_checksum, generate_key
from tests.support.cli import Cli, CliResult, subprocess_env
from tests.support.configs import TEST_CONFIG
from tests.support.gateway_process import REPO_ROOT, closed_port
from tests.support.stores import Stores


def keygate(stores: Stores | None, *args: str, stdin: str | None = None, **env: str) -> CliResult:
    """`python -m gateway ARGS…` as an operator runs it, on the test stores."""
    base = {"KEYGATE_CONFIG": str(TEST_CONFIG)}
    if stores is not None:
        base |= {"KEYGATE_DATABASE_URL": stores.database_url, "KEYGATE_REDIS_URL": stores.redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=subprocess_env({**base, **env}),
        cwd=REPO_ROOT,
        timeout=60,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def test_version_comes_from_the_package_metadata() -> None:
    result = keygate(None, "--version")
    assert result.code == 0, result.err
    assert result.out == f"keygate {metadata.version('keygate')}\n"


def _options(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for action in parser._actions:  # argparse offers no public walk over its options
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _options(child, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            found.append((f"{path} {'/'.join(action.option_strings) or action.dest}", action.help))
    return found


def test_every_option_and_argument_has_help() -> None:
    options = _options(build_parser(), "keygate")
    assert len(options) > 40, options  # the walk reached the subcommands
    assert [name for name, text in options if not text] == []
    # And as printed: the new commands are listed with their help.
    result = keygate(None, "--help")
    for command in ("routes", "--version"):
        assert command in result.out
    verify_help = " ".join(keygate(None, "keys", "verify", "--help").out.split())
    assert "never its secret" in verify_help and "reads it from stdin" in verify_help


@pytest.fixture
def acme(cli: Cli) -> dict[str, Any]:
    """Org acme with two active keys and a revoked one (audit: org create, 3 key
    creates, 1 revoke)."""
    cli.ok("orgs", "create", "acme", "--name", "Acme Inc")
    made = [
        cli.ok(
            "keys", "create", "--org", "acme", "--name", f"k{i}", "--scope", "read", "--json"
        ).json()
        for i in range(3)
    ]
    cli.ok("keys", "revoke", made[2]["key"]["id"])
    return {"keys": made}


def test_audit_cursor_pages_through_every_entry_once(
    acme: dict[str, Any], clean_stores: Stores
) -> None:
    everything = keygate(clean_stores, "audit", "--org", "acme", "--json").json()
    assert len(everything["items"]) == 5 and everything["next_cursor"] is None

    seen, cursor, pages = [], None, 0
    while True:
        args = ["audit", "--org", "acme", "--limit", "3", "--json"]
        page = keygate(clean_stores, *args, *(["--cursor", cursor] if cursor else [])).json()
        seen += [entry["id"] for entry in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 2
    assert seen == [entry["id"] for entry in everything["items"]]

    # The table says how to continue, on stderr, with a command that works as printed.
    first = keygate(clean_stores, "audit", "--org", "acme", "--limit", "3")
    assert first.code == 0 and len(first.out.strip().splitlines()) == 1 + 3
    hint = first.err.strip()
    assert hint.startswith("More entries: add --cursor "), hint
    rest = keygate(
        clean_stores, "audit", "--org", "acme", "--limit", "3", "--cursor", hint.rsplit(" ", 1)[1]
    )
    assert rest.code == 0 and rest.err == ""
    assert len(rest.out.strip().splitlines()) == 1 + 2 and "org.create" in rest.out

    bad = keygate(clean_stores, "audit", "--org", "acme", "--cursor", "garbage!")
    assert (bad.code, bad.out) == (1, "")
    assert bad.err == "keygate: error: invalid cursor; pass next_cursor from the previous page\n"


def test_orgs_show(acme: dict[str, Any], clean_stores: Stores) -> None:
    shown = keygate(clean_stores, "orgs", "show", "acme", "--json")
    assert shown.code == 0, shown.err
    data = shown.json()
    assert data["slug"] == "acme" and data["name"] == "Acme Inc"
    assert data["keys"] == {"active": 2, "revoked": 1, "expired": 0}
    assert data["created_at"].endswith("Z")
    text = keygate(clean_stores, "orgs", "show", "acme").out
    assert "Acme Inc" in text and "2 active, 1 revoked, 0 expired" in text

    missing = keygate(clean_stores, "orgs", "show", "nope")
    assert (missing.code, missing.out) == (1, "")
    assert missing.err.startswith("keygate: error: unknown org 'nope'")


def fields(result: CliResult) -> dict[str, str]:
    """`name  value` lines as printed for people."""
    return dict(line.split(None, 1) for line in result.out.strip().splitlines())


def _no_secret(result: CliResult, secret: str) -> None:
    body = secret[-38:]  # the secret and checksum: no part of them may be printed
    assert body[:32] not in result.out + result.err
    assert secret not in result.out + result.err


def test_keys_verify_an_active_key(acme: dict[str, Any], clean_stores: Stores) -> None:
    made = acme["keys"][0]
    secret = made["secret"]
    result = keygate(clean_stores, "keys", "verify", secret)
    assert result.code == 0, result.err
    _no_secret(result, secret)
    assert fields(result) == {
        "id": made["key"]["id"],
        "display_prefix": made["key"]["display_prefix"],
        "env": "live",
        "format": "ok",
        "checksum": "ok",
        "stored": "yes",
        "secret": "ok",
        "status": "active",
        "org": "acme",
        "name": "k0",
        "scopes": "read",
        "expires_at": "-",
    }

    as_json = keygate(clean_stores, "keys", "verify", "-", "--json", stdin=secret + "\n")
    assert as_json.code == 0, as_json.err
    _no_secret(as_json, secret)
    data = as_json.json()
    assert data["valid"] is True and data["status"] == "active"
    assert data["id"] == made["key"]["id"] and data["env"] == "live"
    assert data["scopes"] == ["read"]


def test_keys_verify_refuses_what_would_not_authenticate(
    acme: dict[str, Any], clean_stores: Stores
) -> None:
    revoked = acme["keys"][2]
    result = keygate(clean_stores, "keys", "verify", revoked["secret"], "--json")
    assert result.code == 1
    _no_secret(result, revoked["secret"])
    assert result.json()["status"] == "revoked" and result.json()["valid"] is False
    assert result.err == f"keygate: error: key {revoked['key']['display_prefix']} is revoked\n"

    # Right id, right checksum, wrong secret: a forged key.
    active = acme["keys"][0]["key"]
    forged, _ = generate_key("kg_live_", active["id"])
    result = keygate(clean_stores, "keys", "verify", forged)
    assert result.code == 1
    _no_secret(result, forged)
    assert fields(result)["secret"] == "mismatch"
    assert "this secret is not its secret" in result.err

    unknown, _ = generate_key("kg_live_")
    result = keygate(clean_stores, "keys", "verify", unknown)
    assert result.code == 1 and "is not stored in this gateway's database" in result.err
    _no_secret(result, unknown)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), "its checksum does not match"),
        (lambda k: k[:30], "it has the wrong length for a key"),
        (lambda k: "zz_live_" + k[8:], "its prefix is not one of this gateway's"),
        (lambda k: k[:20] + "!" + k[21:], "it has characters a key never contains"),
    ],
)
def test_keys_verify_checks_the_format_offline(mangle: Any, reason: str) -> None:
    key, _ = generate_key("kg_live_")
    assert base62_checksum(key[:-6]) == key[-6:]
    bad = mangle(key)
    # No store answers on these URLs: the verdict is reached without one.
    dead = f"127.0.0.1:{closed_port()}"
    result = keygate(
        None,
        "keys",
        "verify",
        bad,
        KEYGATE_DATABASE_URL=f"postgresql://{dead}/x",
        KEYGATE_REDIS_URL=f"redis://{dead}/0",
    )
    assert (result.code, result.out) == (1, "")
    assert result.err.startswith(f"keygate: error: not a valid key: {reason}"), result.err
    assert key[8:40] not in result.err


def test_keys_verify_online_failure_is_one_line() -> None:
    key, _ = generate_key("kg_live_")
    dead = f"127.0.0.1:{closed_port()}"
    result = keygate(
        None,
        "keys",
        "verify",
        key,
        KEYGATE_DATABASE_URL=f"postgresql://{dead}/x",
        KEYGATE_REDIS_URL=f"redis://{dead}/0",
    )
    assert result.code == 1
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "Traceback" not in result.err
    _no_secret(result, key)
