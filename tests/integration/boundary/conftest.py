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

from tests.integration.boundary.recorded import Recorded, recorded_gateway, recording_upstream
from tests.support.gateway_process import UpstreamProcess
from tests.support.keys import KeyMaker, key_maker
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
def boundary(
    stores: Stores,
    boundary_logs: Path,
    upstream: RecordingUpstream,
    echo_upstream: UpstreamProcess,
) -> Iterator[Recorded]:
    with recorded_gateway(
        stores, boundary_logs, name="gateway", upstream=upstream, echo_url=echo_upstream.url
    ) as rec:
        yield rec


@pytest.fixture
def gw(boundary: Recorded) -> Recorded:
    assert boundary.gateway.process.alive(), boundary.gateway.process.tail()
    boundary.upstream.settle()
    boundary.upstream.clear()
    return boundary


@pytest.fixture
async def keys(boundary: Recorded) -> AsyncIterator[KeyMaker]:
    async with key_maker(boundary.gateway.config_path, boundary.gateway.env) as maker:
        yield maker
