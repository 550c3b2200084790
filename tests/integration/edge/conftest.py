"""The shipped edge-proxy configs (deploy/) in front of a recording upstream, asking a
Keygate check listener: one gateway and one upstream for the package, one proxy per test
module (tests/support/edge_proxies.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.boundary.recorded import recording_upstream
from tests.support.configs import gateway_config, gateway_env
from tests.support.credentials import assert_no_key_in
from tests.support.edge_proxies import DEPLOY, render, running_caddy, running_nginx
from tests.support.gateway_process import GatewayProcess, start_gateway, stopped_cleanly
from tests.support.keys import KeyMaker, key_maker
from tests.support.recording_upstream import RecordingUpstream
from tests.support.stores import Stores


def edge_routes(upstream: str) -> dict[str, object]:
    return gateway_config(
        upstreams={"api": {"url": upstream, "connect_timeout": "2s", "timeout": "10s"}},
        routes=[
            {"path": "/public/**", "upstream": "api", "public": True, "name": "public"},
            {
                "path": "/api/read/**",
                "methods": ["GET"],
                "upstream": "api",
                "scopes": ["read"],
                "name": "read",
            },
            {
                "path": "/api/write/**",
                "methods": ["POST", "PUT"],
                "upstream": "api",
                "scopes": ["write"],
                "name": "write",
            },
            {
                "path": "/api/orgs/{org}/**",
                "upstream": "api",
                "scopes": ["read"],
                "org_param": "org",
                "name": "org",
            },
            {
                "path": "/api/limited/**",
                "upstream": "api",
                "scopes": ["read"],
                "name": "limited",
                "rate_limit": {"requests": 2, "per": "1h"},
            },
        ],
        cache={"local_ttl": "1s"},
    )


@pytest.fixture(scope="package")
def edge_upstream() -> Iterator[RecordingUpstream]:
    with recording_upstream() as recorder:
        yield recorder


@pytest.fixture(scope="package")
def edge_gateway(
    stores: Stores, edge_upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    log_dir = tmp_path_factory.mktemp("edge")
    config = edge_routes(f"http://127.0.0.1:{edge_upstream.port}")
    gw = start_gateway(config, log_dir, gateway_env(stores), name="edge-gateway", check=True)
    with stopped_cleanly(gw):
        yield gw
    assert_no_key_in(gw.process.output(), "the gateway's stdout/stderr")


@pytest.fixture
async def keys(edge_gateway: GatewayProcess) -> AsyncIterator[KeyMaker]:
    async with key_maker(edge_gateway.config_path, edge_gateway.env) as maker:
        yield maker


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        auto_decompress=False, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session


def module_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    return tmp_path_factory.mktemp(name)


def _addresses(gateway: GatewayProcess, upstream: RecordingUpstream) -> tuple[str, str]:
    """(check listener, upstream) as a shipped proxy config names them."""
    return f"127.0.0.1:{gateway.check_port}", f"127.0.0.1:{upstream.port}"


NGINX_SHIPPED = DEPLOY / "nginx" / "keygate.conf"


def nginx_site(check: str, upstream: str) -> str:
    return render(
        NGINX_SHIPPED,
        {"127.0.0.1:8082": check, "127.0.0.1:9000": upstream, "listen 8080;": "listen __PORT__;"},
    )


@pytest.fixture(scope="module")
def nginx(
    edge_gateway: GatewayProcess,
    edge_upstream: RecordingUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    site = nginx_site(*_addresses(edge_gateway, edge_upstream))
    with running_nginx(site, tmp_path_factory.mktemp("nginx")) as port:
        yield f"http://127.0.0.1:{port}"


CADDY_SHIPPED = DEPLOY / "caddy" / "Caddyfile"


def caddy_site(check: str, upstream: str) -> str:
    return render(
        CADDY_SHIPPED,
        {"api.example.com {": "__SITE__ {", "127.0.0.1:8082": check, "127.0.0.1:9000": upstream},
    )


@pytest.fixture(scope="module")
def caddy(
    edge_gateway: GatewayProcess,
    edge_upstream: RecordingUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    site = caddy_site(*_addresses(edge_gateway, edge_upstream))
    with running_caddy(site, tmp_path_factory.mktemp("caddy")) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(params=["nginx", "caddy"])
def edge(request: pytest.FixtureRequest) -> str:
    """Each shipped edge proxy in turn, for what both must do alike."""
    url: str = request.getfixturevalue(request.param)
    return url
