"""End-to-end fixtures: a real demo upstream, a probe upstream and `keygate serve`.

The processes live for the whole session (starting them costs seconds), so tests never
truncate the stores: each test creates its own org (unique slug) and keys, and asserts
only on those. Keys are made through the real service (and, where the brief is about the
operator's tool, the real `keygate` CLI in a subprocess).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.config import load_config
from gateway.embedded import free_port
from gateway.keys.service import open_key_service
from tests.integration.proxy.harness import (
    KeyMaker,
    Stack,
    assert_no_key_in,
    gateway_config,
    gateway_env,
)
from tests.integration.proxy.wire import ProbeUpstream
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    start_upstream,
    stopped_cleanly,
)
from tests.support.stores import Stores


@pytest.fixture(scope="session")
def proxy_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy-e2e")


@pytest.fixture(scope="session")
def upstream(proxy_log_dir: Path) -> Iterator[UpstreamProcess]:
    up = start_upstream(proxy_log_dir)
    try:
        yield up
    finally:
        up.process.stop(expect_code=0)


@pytest.fixture(scope="session")
def probe() -> Iterator[ProbeUpstream]:
    p = ProbeUpstream(free_port())
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="session")
def stack(
    stores: Stores, upstream: UpstreamProcess, probe: ProbeUpstream, proxy_log_dir: Path
) -> Iterator[Stack]:
    dead = closed_port()
    config = gateway_config(upstream.url, probe.port, dead)
    gw = start_gateway(config, proxy_log_dir, gateway_env(stores), name="gateway")
    with stopped_cleanly(gw):
        yield Stack(stores, upstream, probe, gw, dead, proxy_log_dir)
    assert_no_key_in(gw.process.output(), "the gateway's stdout/stderr")


@pytest.fixture
def gateway(stack: Stack) -> GatewayProcess:
    assert stack.gateway.process.alive(), stack.gateway.process.tail()
    return stack.gateway


@pytest.fixture
async def keys(stack: Stack) -> AsyncIterator[KeyMaker]:
    gw = stack.gateway
    config = load_config(str(gw.config_path), env=gw.env)
    async with open_key_service(config) as service:
        yield KeyMaker(service, gw.config_path, gw.env)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that changes nothing it receives (no decompression, no redirects)."""
    async with aiohttp.ClientSession(
        auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        yield session
