"""The check listeners in `keygate serve --workers 2`: every worker answers on both ports
(SO_REUSEPORT, gRPC in each worker's own loop), and a stop drains them like the proxy."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import grpc

from tests.integration.check.askers import Asker
from tests.integration.proxy.harness import proxy_config
from tests.support.configs import gateway_env
from tests.support.gateway_process import UpstreamProcess, closed_port, start_gateway
from tests.support.keys import key_maker
from tests.support.stores import Stores


async def test_two_workers_answer_checks_and_stop_cleanly(
    stores: Stores, echo_upstream: UpstreamProcess, tmp_path: Path
) -> None:
    config = proxy_config(echo_upstream.url, closed_port(), closed_port())
    gw = start_gateway(config, tmp_path, gateway_env(stores), workers=2, check=True)
    try:
        async with key_maker(gw.config_path, gw.env) as keys:
            key = await keys.key(["read"])
        async with (
            aiohttp.ClientSession() as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{gw.check_grpc_port}") as channel,
        ):
            asker = Asker(gw, http, channel)
            for api in ("envoy_grpc", "nginx"):
                # Many connections at once: SO_REUSEPORT spreads them over both workers.
                answers = await asyncio.gather(
                    *(asker.ask(api, "GET", "/api/read/x", key.auth) for _ in range(40))
                )
                assert {a.status for a in answers} == {200}, api
        started = time.monotonic()
        assert gw.process.stop(expect_code=0) == 0
        assert time.monotonic() - started < 10
        # Both workers bound both check ports (a second bind without SO_REUSEPORT fails).
        output = gw.process.output()
        assert output.count("check_grpc listening") == 2, output[-2000:]
        assert output.count("check listening") == 2, output[-2000:]
    finally:
        gw.process.kill()
