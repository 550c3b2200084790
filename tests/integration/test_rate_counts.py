"""The rate limiter against a real Redis, and against one that is not there.

The clock is the limiter's injected one, so windows are exact: no test depends on when
it runs. Counter names carry a unique key id per test, so nothing needs truncating.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import cast

import pytest
import redis.asyncio as aioredis

from gateway.config import RouteConfig
from gateway.embedded import free_port
from gateway.keys.rate_limits import RateLimit
from gateway.keys.state import KeyState
from gateway.observability import metrics
from gateway.proxy import rate_limiter
from gateway.proxy.errors import RateLimited
from gateway.proxy.rate_limiter import RateLimiter
from gateway.store.key_cache import RedisKeyCache
from gateway.store.rate_counts import (
    EXPIRY_MARGIN,
    CountsUnavailable,
    RedisRateCounts,
    counter_name,
)
from tests.support.stores import Stores

T0 = 1_800_000_000.0  # a window start for every limit below (divisible by 60 and 3600)


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 0.25

    def __call__(self) -> float:
        return self.now


def route(limit: RateLimit | None, name: str = "r") -> RouteConfig:
    return RouteConfig(path="/x", upstream="u", name=name, rate_limit=limit)


def key(limit: RateLimit | None = None) -> KeyState:
    key_id = uuid.uuid4().hex[:8]
    return KeyState(key_id, "acme", "kg_live_", "live", ("read",), None, False, 1, limit)


@pytest.fixture
async def client(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    cache = RedisKeyCache.connect(stores.redis_url, 60.0, timeout=1.0)
    try:
        yield cache.client
    finally:
        await cache.close()


@pytest.fixture
async def dead_client() -> AsyncIterator[aioredis.Redis]:
    cache = RedisKeyCache.connect(f"redis://127.0.0.1:{free_port()}/0", 60.0, timeout=1.0)
    try:
        yield cache.client
    finally:
        await cache.close()


async def admit_all(limiter: RateLimiter, r: RouteConfig, k: KeyState, n: int) -> list[object]:
    """n requests: each one's headers as a dict, or its refusal."""
    out: list[object] = []
    for _ in range(n):
        try:
            out.append(dict(await limiter.admit(r, k)))
        except RateLimited as refusal:
            out.append(refusal)
    return out


def redis_errors() -> float:
    value = metrics.REGISTRY.get_sample_value("keygate_store_errors_total", {"store": "redis"})
    return value or 0.0


def remaining(results: list[object]) -> list[str]:
    return [r["RateLimit-Remaining"] if isinstance(r, dict) else "429" for r in results]


async def test_counts_are_shared_through_redis(client: aioredis.Redis) -> None:
    clock = Clock()
    a = RateLimiter(RedisRateCounts(client), clock=clock)
    b = RateLimiter(RedisRateCounts(client), clock=clock)  # another gateway, same Redis
    r, k = route(RateLimit(3, 60)), key()
    first = await admit_all(a, r, k, 2)
    second = await admit_all(b, r, k, 2)
    assert remaining(first + second) == ["2", "1", "0", "429"]
    refusal = second[-1]
    assert isinstance(refusal, RateLimited)
    assert refusal.headers() == {
        "Retry-After": "60",
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "60",
    }
    # The counter is where the store says, with an expiry at the window's end + margin.
    name = counter_name("r", k.id, 60, int(T0))
    assert int(cast(bytes, await client.get(name))) == 4
    assert 60 < await client.ttl(name) <= 60 + EXPIRY_MARGIN
    # Each key and each route has its own budget.
    assert remaining(await admit_all(a, r, key(), 1)) == ["2"]
    assert remaining(await admit_all(a, route(RateLimit(3, 60), "other"), k, 1)) == ["2"]


async def test_next_window_starts_afresh(client: aioredis.Redis) -> None:
    clock = Clock()
    limiter = RateLimiter(RedisRateCounts(client), clock=clock)
    r, k = route(RateLimit(2, 60)), key()
    assert remaining(await admit_all(limiter, r, k, 3)) == ["1", "0", "429"]
    clock.now = T0 + 59.9
    assert remaining(await admit_all(limiter, r, k, 1)) == ["429"]
    clock.now = T0 + 60.0
    results = await admit_all(limiter, r, k, 3)
    assert remaining(results) == ["1", "0", "429"]
    assert isinstance(results[0], dict) and results[0]["RateLimit-Reset"] == "60"


async def test_route_and_key_limits_both_apply(client: aioredis.Redis) -> None:
    clock = Clock()
    limiter = RateLimiter(RedisRateCounts(client), clock=clock)
    k = key(RateLimit(4, 3600))
    narrow, wide = route(RateLimit(2, 60), "narrow"), route(None, "wide")
    # The route's 2/1m has fewer left than the key's 4/1h: its numbers are shown.
    results = await admit_all(limiter, narrow, k, 3)
    assert remaining(results) == ["1", "0", "429"]
    assert isinstance(results[0], dict) and results[0]["RateLimit-Limit"] == "2"
    # The refused request did not use the key's budget: 2 of 4 are left elsewhere.
    results = await admit_all(limiter, wide, k, 3)
    assert remaining(results) == ["1", "0", "429"]
    assert isinstance(results[0], dict) and results[0]["RateLimit-Limit"] == "4"
    refusal = results[-1]
    assert isinstance(refusal, RateLimited) and refusal.window.limit == RateLimit(4, 3600)
    assert refusal.headers()["Retry-After"] == "3600"
    # Once the route's window ends, the key's own limit still refuses.
    clock.now = T0 + 60.5
    results = await admit_all(limiter, narrow, k, 1)
    assert isinstance(results[0], RateLimited) and results[0].window.limit.requests == 4


async def test_redis_down_counts_in_process_and_logs_once(
    dead_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    limiter = RateLimiter(RedisRateCounts(dead_client), clock=clock)
    errors_before = redis_errors()
    r, k = route(RateLimit(3, 60)), key()
    with caplog.at_level(logging.WARNING, logger="keygate.rate_limit"):
        results = await admit_all(limiter, r, k, 5)
    # Never refused or failed because of Redis: the limit holds in this process.
    assert remaining(results) == ["2", "1", "0", "429", "429"]
    warnings = [rec for rec in caplog.records if "Redis unreachable" in rec.getMessage()]
    assert len(warnings) == 1, caplog.records
    # Redis is asked once, then left alone for RETRY_INTERVAL: one error, not five.
    assert redis_errors() == errors_before + 1
    assert len(limiter.local) == 1


async def test_in_process_counts_forget_ended_windows() -> None:
    clock = Clock()
    limiter = RateLimiter(None, clock=clock)
    for _ in range(10):
        await admit_all(limiter, route(RateLimit(3, 60)), key(), 1)
    assert len(limiter.local) == 10
    clock.now = T0 + 61.0
    await admit_all(limiter, route(RateLimit(3, 60)), key(), 1)
    assert len(limiter.local) == 1


async def test_a_refusal_describes_the_limit_that_refused(client: aioredis.Redis) -> None:
    clock = Clock()
    limiter = RateLimiter(RedisRateCounts(client), clock=clock)
    k = key(RateLimit(6, 3600))
    narrow, wide = route(RateLimit(2, 60), "narrow"), route(None, "wide")
    await admit_all(limiter, wide, k, 3)
    results = await admit_all(limiter, narrow, k, 3)
    # The third used the key's last request (0 left, an hour to go), then was given it
    # back: the route's 2/1m refused it, and a minute is when to come back.
    refusal = results[-1]
    assert isinstance(refusal, RateLimited) and refusal.window.limit == RateLimit(2, 60)
    assert refusal.headers()["Retry-After"] == "60"
    clock.now = T0 + 60.5
    assert remaining(await admit_all(limiter, narrow, k, 1)) == ["0"]


async def test_redis_down_gives_back_in_process(dead_client: aioredis.Redis) -> None:
    clock = Clock()
    limiter = RateLimiter(RedisRateCounts(dead_client), clock=clock)
    k = key(RateLimit(4, 3600))
    narrow, wide = route(RateLimit(2, 60), "narrow"), route(None, "wide")
    assert remaining(await admit_all(limiter, narrow, k, 4)) == ["1", "0", "429", "429"]
    assert remaining(await admit_all(limiter, wide, k, 3)) == ["1", "0", "429"]


class BlackHole:
    """A Redis that never answers: each call fails after its timeout."""

    def __init__(self) -> None:
        self.calls = 0

    async def count(self, counters: object, now: float) -> list[int]:
        self.calls += 1
        await asyncio.sleep(0.2)
        raise CountsUnavailable("TimeoutError")


async def test_one_probe_at_a_time_while_redis_is_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rate_limiter, "RETRY_INTERVAL", 0.05)
    hole = BlackHole()
    limiter = RateLimiter(hole, clock=Clock())  # type: ignore[arg-type]
    r, k = route(RateLimit(10**6, 60)), key()
    await admit_all(limiter, r, k, 1)  # the outage is noticed
    await asyncio.sleep(0.06)  # a probe is due
    await asyncio.gather(*(admit_all(limiter, r, k, 1) for _ in range(20)))
    # One of the twenty waited for the probe's timeout; the others counted locally.
    assert hole.calls == 2


async def test_a_refusal_never_makes_a_concurrent_request_fail(client: aioredis.Redis) -> None:
    """A give-back is part of the count: no other request sees a counter over its limit
    because of a request that was refused and is being given back."""
    clock = Clock()
    limiter = RateLimiter(RedisRateCounts(client), clock=clock)
    for _ in range(20):
        k = key(RateLimit(2, 3600))
        narrow, wide = route(RateLimit(1, 60), "narrow"), route(None, "wide")
        assert remaining(await admit_all(limiter, narrow, k, 1)) == ["0"]  # key: 1 of 2
        # The narrow one is refused by its route; the wide one has the key's last request.
        results = await asyncio.gather(
            admit_all(limiter, narrow, k, 1), admit_all(limiter, wide, k, 1)
        )
        assert remaining(results[0] + results[1]) == ["429", "0"]


async def test_a_counter_expires_with_its_window_not_after_its_last_request(
    client: aioredis.Redis,
) -> None:
    clock = Clock()
    limiter = RateLimiter(RedisRateCounts(client), clock=clock)
    r, k = route(RateLimit(100, 60)), key()
    name = counter_name("r", k.id, 60, int(T0))
    await admit_all(limiter, r, k, 1)
    first = await client.pttl(name)
    assert (60 - 0.25 + EXPIRY_MARGIN - 1) * 1000 < first <= (60 - 0.25 + EXPIRY_MARGIN) * 1000
    clock.now = T0 + 50.25  # late in the window: the expiry stays where it was
    await admit_all(limiter, r, k, 1)
    late = await client.pttl(name)
    assert (10 + EXPIRY_MARGIN - 1) * 1000 < late <= (10 + EXPIRY_MARGIN) * 1000


async def test_redis_back_is_logged_once_at_info(
    client: aioredis.Redis,
    dead_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rate_limiter, "RETRY_INTERVAL", 0.05)
    limiter = RateLimiter(RedisRateCounts(dead_client), clock=Clock())
    r, k = route(RateLimit(10, 60)), key()
    with caplog.at_level(logging.INFO, logger="keygate.rate_limit"):
        assert remaining(await admit_all(limiter, r, k, 1)) == ["9"]  # counted locally
        limiter.redis = RedisRateCounts(client)  # Redis is back
        await asyncio.sleep(0.06)
        assert remaining(await admit_all(limiter, r, k, 2)) == ["9", "8"]  # shared again
    back = [rec for rec in caplog.records if "Redis reachable again" in rec.getMessage()]
    assert [rec.levelno for rec in back] == [logging.INFO]
