"""A gateway whose KEYGATE_SECRET differs from the fleet's says so (issue 11).

Two real gateways share one Redis: the first has the session's secret, the second another
one. The second must log one ERROR naming what to fix (never its secret) and show
keygate_secret_mismatch 1; the first keeps 0 and the fleet's check value stays in Redis.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from gateway.store.secret_check import CHECK_KEY, check_value
from tests.support.configs import gateway_env, operator_config
from tests.support.credentials import SECRET, assert_no_key_in
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.metrics import scrape
from tests.support.stores import Stores

MISMATCH: tuple[str, frozenset[tuple[str, str]]] = ("keygate_secret_mismatch", frozenset())


async def eventually(http: aiohttp.ClientSession, gw: GatewayProcess, value: float) -> None:
    deadline = time.monotonic() + 10
    while (await scrape(http, gw.admin_url)).get(MISMATCH) != value:
        assert time.monotonic() < deadline, f"keygate_secret_mismatch never became {value}"
        await asyncio.sleep(0.1)


def errors_of(gw: GatewayProcess) -> list[dict[str, str]]:
    lines = [json.loads(line) for line in gw.process.stderr().splitlines() if line.strip()]
    return [entry for entry in lines if entry["level"] == "error"]


async def test_a_different_secret_is_reported_once_and_shown(
    stores: Stores,
    echo_upstream: UpstreamProcess,
    obs_log_dir: Path,
    http: aiohttp.ClientSession,
) -> None:
    redis = aioredis.Redis.from_url(stores.redis_url)
    try:
        await redis.delete(CHECK_KEY)  # earlier gateways' check: this test starts the fleet
        config = operator_config(echo_upstream.url, closed_port())
        right = start_gateway(config, obs_log_dir, gateway_env(stores), name="secret-right")
        with stopped_cleanly(right):
            deadline = time.monotonic() + 10
            while await redis.get(CHECK_KEY) != check_value(SECRET.encode()).encode():
                assert time.monotonic() < deadline, "the first gateway recorded no check value"
                await asyncio.sleep(0.05)

            other = secrets.token_urlsafe(48)
            env = {**gateway_env(stores), "KEYGATE_SECRET": other}
            wrong = start_gateway(config, obs_log_dir, env, name="secret-wrong")
            with stopped_cleanly(wrong):
                await eventually(http, wrong, 1.0)
                await eventually(http, right, 0.0)
                # The fleet's value stays: the odd one out does not take over.
                assert await redis.get(CHECK_KEY) == check_value(SECRET.encode()).encode()
                assert await redis.pttl(CHECK_KEY) > 0  # it expires unless refreshed
                # The proxy still works on the odd instance (argon2 instead of Redis).
                async with http.get(wrong.url + "/public/x") as reply:
                    assert reply.status == 200
            [error] = errors_of(wrong)
            assert error["logger"] == "keygate.secret", error
            assert "KEYGATE_SECRET" in error["message"] and CHECK_KEY in error["message"]
            assert "same KEYGATE_SECRET" in error["message"], error
            output = wrong.process.output()
            assert other not in output and check_value(other.encode()) not in output
            assert_no_key_in(output, "the gateway with another secret")
        assert errors_of(right) == []
    finally:
        await redis.aclose()
