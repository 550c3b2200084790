"""Shared fixtures: real stores and the demo upstream for the session, a clean state and
a CLI runner per test. The helpers themselves live in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import Cli
from tests.support.configs import TEST_CONFIG
from tests.support.gateway_process import UpstreamProcess, running_upstream
from tests.support.stores import Stores, reset, start_stores


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


@pytest.fixture
def cli(clean_stores: Stores) -> Cli:
    return Cli()


@pytest.fixture(scope="session")
def session_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session-wide processes write their stdout and stderr."""
    return tmp_path_factory.mktemp("session-processes")


@pytest.fixture(scope="session")
def echo_upstream(session_logs: Path) -> Iterator[UpstreamProcess]:
    """The demo upstream (echo, slow, WebSocket echo) every suite's gateways forward to."""
    with running_upstream(session_logs, name="echo-upstream") as up:
        yield up
