"""One real `keygate serve` with a root token for the admin API tests, on the session stores.

The process lives for this folder's tests: nothing is truncated, each test makes its own
orgs (unique slugs) and keys through the admin API itself, and asserts only on those.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.admin_client import AdminClient
from tests.support.configs import gateway_env, operator_config
from tests.support.credentials import ROOT_TOKEN, assert_no_key_in
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.stores import Stores


@pytest.fixture(scope="package")
def admin_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("admin-e2e")


@pytest.fixture(scope="package")
def admin_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, admin_log_dir: Path
) -> Iterator[GatewayProcess]:
    config = operator_config(echo_upstream.url, closed_port())
    gw = start_gateway(config, admin_log_dir, gateway_env(stores), name="admin-gateway")
    with stopped_cleanly(gw):
        yield gw
    assert_no_key_in(gw.process.output(), "the admin gateway's stdout/stderr")


@pytest.fixture
def gateway(admin_gateway: GatewayProcess) -> GatewayProcess:
    assert admin_gateway.process.alive(), admin_gateway.process.tail()
    return admin_gateway


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def root(http: aiohttp.ClientSession, gateway: GatewayProcess) -> AdminClient:
    """The admin API as the root principal."""
    return AdminClient(http, gateway.admin_url, ROOT_TOKEN)
