"""The installed entry points, as a user runs them (separate processes: kept to two)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.cli import Cli

ROOT = Path(__file__).resolve().parents[2]


def test_python_dash_m_gateway_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: keygate")
    for command in (
        "serve",
        "dev",
        "migrate",
        "check-config",
        "orgs",
        "keys",
        "audit",
        "routes",
        "--version",
    ):
        assert command in result.stdout


def test_keygate_console_script(cli: Cli) -> None:
    keygate = Path(sys.executable).with_name("keygate")
    assert keygate.exists(), "the keygate console script is not installed"
    missing = subprocess.run(
        [str(keygate), "keys", "list", "--org", "x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr == "keygate: error: unknown org 'x'\n"

    cli.ok("orgs", "create", "xy")
    cli.ok("keys", "create", "--org", "xy", "--name", "ci", "--scope", "read")
    listed = subprocess.run(
        [str(keygate), "keys", "list", "--org", "xy", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert [k["name"] for k in json.loads(listed.stdout)["items"]] == ["ci"]
