"""Real processes for the observability tests: the demo upstream and `keygate serve`.

These tests read counters and logs of whole processes, so the gateways here serve only
this folder's tests; keys are made through each gateway's own admin API (root token).
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
def obs_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("observability-e2e")


@pytest.fixture(scope="package")
def dead_port() -> int:
    return closed_port()


def started(
    stores: Stores,
    upstream: UpstreamProcess,
    log_dir: Path,
    name: str,
    *,
    database_url: str | None = None,
    workers: int | None = None,
    dead: int | None = None,
) -> GatewayProcess:
    config = operator_config(upstream.url, dead if dead is not None else closed_port())
    env = gateway_env(stores, database_url=database_url)
    return start_gateway(config, log_dir, env, name=name, workers=workers)


def stopped(gw: GatewayProcess, where: str) -> None:
    gw.process.stop(expect_code=0)
    assert_no_key_in(gw.process.output(), where)


@pytest.fixture(scope="module")
def metrics_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, obs_log_dir: Path, dead_port: int
) -> Iterator[GatewayProcess]:
    gw = started(stores, echo_upstream, obs_log_dir, "metrics-gateway", dead=dead_port)
    with stopped_cleanly(gw):
        yield gw
    assert_no_key_in(gw.process.output(), "the metrics gateway")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """One request per connection, so workers sharing a port each get some."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session


def root_of(http: aiohttp.ClientSession, gateway: GatewayProcess) -> AdminClient:
    return AdminClient(http, gateway.admin_url, ROOT_TOKEN)
