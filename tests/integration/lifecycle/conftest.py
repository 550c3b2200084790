"""Fixtures for the lifecycle tests (SPEC §9): readiness, draining, start-up.

The store-outage test stops Redis, so this package runs on its own stoppable pair: the
consistency suite's `own_stores` (imported, not copied), never the session's stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.consistency.conftest import (
    OwnStores,
    _stores_up_after_each_test,
    own_stores,
)

# Fixtures are found by name in this module: `own_stores` (package scope, so this package
# gets its own pair) and the autouse restart of whatever a failed test left stopped.
__all__ = ["OwnStores", "_stores_up_after_each_test", "own_stores"]


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "processes"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """Every request on a fresh connection (spread over the workers by SO_REUSEPORT)."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0),
        timeout=aiohttp.ClientTimeout(total=10),
    ) as session:
        yield session
