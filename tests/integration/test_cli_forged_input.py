"""Forged or garbage values where the CLI expects one it printed itself: a clear exit 1
naming the option, never a traceback."""

from __future__ import annotations

import base64
import json

import pytest

from tests.support.cli import Cli


def forged(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "",
        "%%%%",
        "x" * 5000,
        forged([1, 2]),
        forged({"b": "12"}),
        forged({"b": 10**30}),
        forged({"b": -(10**30)}),
        forged({"b": 1.5}),
        forged({"c": "2026-01-01", "i": "x"}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_audit_refuses_a_forged_cursor(cli: Cli, cursor: str) -> None:
    cli.ok("orgs", "create", "acme", "--name", "Acme")
    result = cli("audit", "--org", "acme", "--cursor", cursor)
    assert "Traceback" not in result.err
    if cursor == "":
        assert result.code == 0  # no cursor: the first page
        return
    assert result.code == 1, result
    assert "cursor" in result.err and len(result.err.splitlines()) == 1, result.err
