"""One real `keygate serve` with a root token for the admin API tests, on the session stores.

The process lives for this folder's tests: nothing is truncated, each test makes its own
orgs (unique slugs) and keys through the admin API itself, and asserts only on those.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.admin.harness import (
    ROOT_TOKEN,
    AdminClient,
    assert_no_key_in,
    operator_config,
    operator_env,
)
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    start_upstream,
    stopped_cleanly,
)
from tests.support.stores import Stores


@pytest.fixture(scope="package")
def admin_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("admin-e2e")


@pytest.fixture(scope="package")
def admin_upstream(admin_log_dir: Path) -> Iterator[UpstreamProcess]:
    up = start_upstream(admin_log_dir, name="admin-upstream")
    try:
        yield up
    finally:
        up.process.stop(expect_code=0)


@pytest.fixture(scope="package")
def admin_gateway(
    stores: Stores, admin_upstream: UpstreamProcess, admin_log_dir: Path
) -> Iterator[GatewayProcess]:
    config = operator_config(admin_upstream.url, closed_port())
    gw = start_gateway(config, admin_log_dir, operator_env(stores), name="admin-gateway")
    with stopped_cleanly(gw):
        yield gw
    output = gw.process.output()
    assert_no_key_in(output, "the admin gateway's stdout/stderr")
    assert ROOT_TOKEN not in output, "the root admin token was logged"


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
