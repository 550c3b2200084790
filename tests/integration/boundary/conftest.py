"""The boundary tests' shared gateway: one recording upstream, one echo upstream and one
gateway in front of them (tests/integration/boundary/recorded.py) for every test here.

Every test starts from an upstream with no request in flight and nothing recorded (the
`gw` fixture, or check_pipeline / requests picked out by their own request id), and makes
its own keys when it needs more than the shared ones: no test sees another's state.
A gateway with another config (trusted proxies) is its own module's fixture, in front of
the same recording upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.keys.service import open_key_service
from tests.integration.boundary.recorded import Recorded, recorded_gateway, recording_upstream
from tests.integration.proxy.harness import KeyMaker
from tests.support.gateway_process import UpstreamProcess, start_upstream
from tests.support.recording_upstream import RecordingUpstream
from tests.support.stores import Stores


@pytest.fixture(scope="package")
def boundary_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("boundary")


@pytest.fixture(scope="package")
def upstream() -> Iterator[RecordingUpstream]:
    with recording_upstream() as recorder:
        yield recorder


@pytest.fixture(scope="package")
def echo(boundary_logs: Path) -> Iterator[UpstreamProcess]:
    process = start_upstream(boundary_logs, name="echo")
    try:
        yield process
    finally:
        process.process.stop(expect_code=0)


@pytest.fixture(scope="package")
def boundary(
    stores: Stores, boundary_logs: Path, upstream: RecordingUpstream, echo: UpstreamProcess
) -> Iterator[Recorded]:
    with recorded_gateway(stores, boundary_logs, name="gateway", upstream=upstream,
                          echo_url=echo.url) as rec:
        yield rec


@pytest.fixture
def gw(boundary: Recorded) -> Recorded:
    assert boundary.gateway.process.alive(), boundary.gateway.process.tail()
    boundary.upstream.settle()
    boundary.upstream.clear()
    return boundary


@pytest.fixture
async def keys(boundary: Recorded) -> AsyncIterator[KeyMaker]:
    g = boundary.gateway
    config = load_config(str(g.config_path), env=g.env)
    async with open_key_service(config) as service:
        yield KeyMaker(service, g.config_path, g.env)
