"""Shared fixtures: real stores for the session, a clean state and a CLI runner per test."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from tests.support.stores import Stores, reset, start_stores

TEST_CONFIG = Path(__file__).parent / "support" / "keygate.test.yaml"


@pytest.fixture(scope="session")
def stores() -> Iterator[Stores]:
    with start_stores() as s:
        yield s


@pytest.fixture
def clean_stores(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> Stores:
    """Empty stores, with the environment pointing every command at them."""
    reset(stores)
    monkeypatch.setenv("KEYGATE_DATABASE_URL", stores.database_url)
    monkeypatch.setenv("KEYGATE_REDIS_URL", stores.redis_url)
    monkeypatch.setenv("KEYGATE_CONFIG", str(TEST_CONFIG))
    return stores


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """Runs `keygate ARGS…` in-process through its real entry point."""

    def __call__(self, *args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(args), out=out, err=err)
        return CliResult(code, out.getvalue(), err.getvalue())

    def ok(self, *args: str) -> CliResult:
        result = self(*args)
        assert result.code == 0, f"keygate {' '.join(args)} failed: {result.err}"
        return result


@pytest.fixture
def cli(clean_stores: Stores) -> Cli:
    return Cli()
