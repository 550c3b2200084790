"""One gateway with short timeouts in front of a raw recording upstream and the echo upstream.

The routes are public unless the test is about authentication, so these tests attack the
HTTP boundary itself; keys come from the proxy harness when a test needs one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.embedded import free_port
from gateway.keys.service import open_key_service
from tests.integration.proxy.harness import (
    CHEAP_ARGON2,
    KeyMaker,
    assert_no_key_in,
    gateway_env,
)
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    start_gateway,
    start_upstream,
    stopped_cleanly,
)
from tests.support.raw_upstream import RawUpstream
from tests.support.stores import Stores

HEADER_TIMEOUT = 1.0
BODY_IDLE_TIMEOUT = 1.0
MAX_MESSAGE = 64 * 1024
# A host name no resolver accepts (a 64-character label): aiohttp's IDNA encoding raises
# UnicodeError, which no refusal maps, so requests on this route fail inside the gateway.
UNENCODABLE_HOST = "a" * 64 + ".invalid"


def boundary_config(echo: str, raw_port: int) -> dict[str, Any]:
    raw = f"http://127.0.0.1:{raw_port}"
    return {
        "dev": False,
        "keys": {"argon2": CHEAP_ARGON2, "verify_threads": 2},
        "server": {
            "drain_timeout": "2s", "store_timeout": "1s",
            "header_timeout": f"{HEADER_TIMEOUT:g}s",
            "body_idle_timeout": f"{BODY_IDLE_TIMEOUT:g}s",
            "keepalive_timeout": "30s",
        },
        "log": {"level": "info", "format": "json", "access_log": True},
        "upstreams": {
            "echo": {"url": echo, "timeout": "10s"},
            "raw": {"url": raw, "timeout": "10s"},
            "broken": {"url": f"http://{UNENCODABLE_HOST}", "timeout": "2s"},
        },
        "routes": [
            {"path": "/raw/small/**", "upstream": "raw", "public": True, "max_body": "1KiB",
             "name": "raw-small"},
            {"path": "/raw/**", "upstream": "raw", "public": True, "name": "raw"},
            {"path": "/ws-raw/**", "upstream": "raw", "public": True, "websocket": True,
             "name": "ws-raw"},
            {"path": "/ws/**", "upstream": "echo", "public": True, "websocket": True,
             "max_message": f"{MAX_MESSAGE // 1024}KiB", "name": "ws"},
            {"path": "/auth/**", "upstream": "raw", "scopes": ["write"], "max_body": "1KiB",
             "name": "auth"},
            {"path": "/echo/small/**", "upstream": "echo", "public": True, "max_body": "1KiB",
             "name": "echo-small"},
            {"path": "/echo/**", "upstream": "echo", "public": True, "name": "echo"},
            {"path": "/broken/**", "upstream": "broken", "public": True, "name": "broken"},
        ],
    }


@dataclass
class Boundary:
    gateway: GatewayProcess
    raw: RawUpstream
    echo: UpstreamProcess

    @property
    def port(self) -> int:
        return self.gateway.proxy_port


@pytest.fixture(scope="module")
def boundary_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("boundary")


@pytest.fixture(scope="module")
def boundary(stores: Stores, boundary_logs: Path) -> Iterator[Boundary]:
    echo = start_upstream(boundary_logs, name="echo")
    raw = RawUpstream(free_port())
    raw.start()
    try:
        config = boundary_config(echo.url, raw.port)
        gw = start_gateway(config, boundary_logs, gateway_env(stores), name="gateway")
        with stopped_cleanly(gw):
            yield Boundary(gw, raw, echo)
        assert_no_key_in(gw.process.output(), "the gateway's output")
    finally:
        raw.stop()
        echo.process.stop(expect_code=0)


@pytest.fixture
def gw(boundary: Boundary) -> Boundary:
    assert boundary.gateway.process.alive(), boundary.gateway.process.tail()
    boundary.raw.clear()
    return boundary


@pytest.fixture
async def keys(boundary: Boundary) -> AsyncIterator[KeyMaker]:
    g = boundary.gateway
    config = load_config(str(g.config_path), env=g.env)
    async with open_key_service(config) as service:
        yield KeyMaker(service, g.config_path, g.env)
