"""A gateway with its check listeners (SPEC §12) on the proxy suite's routes, and clients
that ask it exactly as Envoy (HTTP and gRPC), nginx and Traefik/Caddy do."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp

# This process forks (CLI subprocesses) while gRPC's client threads run: no fork handlers.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
import grpc
import pytest

from tests.integration.check.askers import Asker
from tests.integration.proxy.harness import proxy_config
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
def check_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    log_dir = tmp_path_factory.mktemp("check")
    config = proxy_config(echo_upstream.url, closed_port(), closed_port())
    gw = start_gateway(config, log_dir, gateway_env(stores), name="check-gateway", check=True)
    with stopped_cleanly(gw):
        yield gw
    assert_no_key_in(gw.process.output(), "the gateway's stdout/stderr")


@pytest.fixture
def gateway(check_gateway: GatewayProcess) -> GatewayProcess:
    assert check_gateway.process.alive(), check_gateway.process.tail()
    return check_gateway


@pytest.fixture
async def keys(check_gateway: GatewayProcess) -> AsyncIterator[KeyMaker]:
    async with key_maker(check_gateway.config_path, check_gateway.env) as maker:
        yield maker


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        auto_decompress=False, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session


@pytest.fixture
async def asker(gateway: GatewayProcess, http: aiohttp.ClientSession) -> AsyncIterator[Asker]:
    assert gateway.check_grpc_port is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.check_grpc_port}") as channel:
        yield Asker(gateway, http, channel)


def log_dir_of(gw: GatewayProcess) -> Path:
    return gw.config_path.parent
