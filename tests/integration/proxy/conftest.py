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

from gateway.embedded import free_port
from tests.integration.proxy.harness import Stack, proxy_config
from tests.integration.proxy.wire import ProbeUpstream
from tests.support.configs import gateway_env
from tests.support.credentials import assert_no_key_in
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.keys import KeyMaker, key_maker
from tests.support.stores import Stores


@pytest.fixture(scope="session")
def proxy_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy-e2e")


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
    stores: Stores, echo_upstream: UpstreamProcess, probe: ProbeUpstream, proxy_log_dir: Path
) -> Iterator[Stack]:
    dead = closed_port()
    config = proxy_config(echo_upstream.url, probe.port, dead)
    gw = start_gateway(config, proxy_log_dir, gateway_env(stores), name="gateway")
    with stopped_cleanly(gw):
        yield Stack(stores, echo_upstream, probe, gw, dead, proxy_log_dir)
    assert_no_key_in(gw.process.output(), "the gateway's stdout/stderr")


@pytest.fixture
def gateway(stack: Stack) -> GatewayProcess:
    assert stack.gateway.process.alive(), stack.gateway.process.tail()
    return stack.gateway


@pytest.fixture
async def keys(stack: Stack) -> AsyncIterator[KeyMaker]:
    async with key_maker(stack.gateway.config_path, stack.gateway.env) as maker:
        yield maker


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that changes nothing it receives (no decompression, no redirects)."""
    async with aiohttp.ClientSession(
        auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        yield session
