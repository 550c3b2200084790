"""SPEC §4 rate limits through real `keygate serve` processes, the shared Redis and Postgres.

Routes `limited` and `limited-org` allow 3 requests per key per hour, `probe-limited` 5;
keys get their own limits through the real CLI and service. Windows are an hour long and
aligned to the clock, so a test can compute the expected RateLimit-Reset from its own
clock; a scenario that happens to straddle a window boundary is re-run once with fresh
keys (see `in_one_window`) instead of sleeping or flaking.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.integration.proxy.harness import Stack
from tests.integration.proxy.test_proxy_process import _until_logged
from tests.integration.proxy.wire import UPSTREAM_LIMITS
from tests.support.configs import gateway_env
from tests.support.credentials import ISSUED, assert_no_key_in
from tests.support.errors import Reply, assert_error
from tests.support.gateway_process import (
    GatewayProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.keys import ACTOR, KeyMaker
from tests.support.metrics import labels, moved, scrape
from tests.support.rate_limits import PER, Seen, get, in_one_window


def statuses(seen: list[Seen]) -> list[int]:
    return [s.status for s in seen]


def assert_rate_limited(seen: Seen, requests: int) -> dict[str, Any]:
    reply = Reply(seen.status, seen.headers, json.dumps(seen.body))
    error = assert_error(reply, 429, "rate_limited")
    reset = seen.headers["RateLimit-Reset"]
    assert seen.headers["Retry-After"] == reset and int(reset) >= 1
    assert (seen.limit, seen.remaining) == (str(requests), "0")
    seen.assert_reset_matches_the_clock()
    assert error["message"] == (
        f"Rate limit exceeded: {requests} requests per {PER} seconds; retry after {reset} seconds."
    )
    return error


# --- a route's limit ------------------------------------------------------------------


async def test_route_limit_allows_three_then_refuses_with_every_header(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    async def scenario() -> list[Seen]:
        key = await keys.key(["read"])
        return [await get(http, gateway.url + "/api/limited/x", key.secret) for _ in range(4)]

    seen = await in_one_window(scenario)
    assert statuses(seen) == [200, 200, 200, 429]
    assert [s.remaining for s in seen] == ["2", "1", "0", "0"]
    for s in seen[:3]:
        assert s.limit == "3" and s.body["path"] == "/api/limited/x"  # forwarded
        s.assert_reset_matches_the_clock()
        assert "Retry-After" not in s.headers
    assert_rate_limited(seen[3], 3)


async def test_each_key_has_its_own_budget_on_a_route(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    url = gateway.url + "/api/limited/x"

    async def scenario() -> list[Seen]:
        a = await keys.key(["read"])
        b = await keys.key(["read"], org=a.org)  # same org: budgets are per key, not org
        first = [await get(http, url, a.secret) for _ in range(3)]
        other = [await get(http, url, b.secret)]
        return [*first, *other, await get(http, url, a.secret)]

    seen = await in_one_window(scenario)
    assert statuses(seen) == [200, 200, 200, 200, 429]
    assert [s.remaining for s in seen] == ["2", "1", "0", "2", "0"]


async def test_refused_401_and_403_consume_no_budget(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    async def scenario() -> list[Seen]:
        key = await keys.key(["read"])
        own = gateway.url + f"/api/limited-org/{key.org}/x"
        wrong_secret = key.with_secret("W" * 32)
        refused = [await get(http, own, wrong_secret) for _ in range(4)]
        refused += [
            await get(http, gateway.url + "/api/limited-org/someone-else/x", key.secret)
            for _ in range(4)
        ]
        return refused + [await get(http, own, key.secret) for _ in range(4)]

    seen = await in_one_window(scenario)
    assert statuses(seen) == [401] * 4 + [403] * 4 + [200, 200, 200, 429]
    assert {s.body["error"]["code"] for s in seen[:8]} == {"invalid_api_key", "wrong_org"}
    assert all(s.limit is None for s in seen[:8])  # refused before counting
    assert [s.remaining for s in seen[8:]] == ["2", "1", "0", "0"]


# --- a key's own limit ------------------------------------------------------------------


async def test_key_limit_from_the_cli_applies_across_routes(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    org = await keys.org("rl")

    async def scenario() -> list[Seen]:
        out = await keys.cli_ok(
            "keys",
            "create",
            "--org",
            org,
            "--name",
            "limited",
            "--scope",
            "read",
            "--rate-limit",
            "4/1h",
            "--json",
        )
        created = json.loads(out)
        ISSUED.append(created["secret"])
        assert created["key"]["rate_limit"] == {"requests": 4, "per": "1h"}
        secret = created["secret"]
        paths = [
            "/api/read/a",
            "/api/any/b",
            "/api/read/c",
            "/api/any/d",
            "/api/read/e",
            "/api/any/f",
        ]
        return [await get(http, gateway.url + p, secret) for p in paths]

    seen = await in_one_window(scenario)
    assert statuses(seen) == [200, 200, 200, 200, 429, 429]
    assert [s.remaining for s in seen] == ["3", "2", "1", "0", "0", "0"]
    assert {s.limit for s in seen} == {"4"}
    assert_rate_limited(seen[4], 4)


async def test_unlimited_key_on_unlimited_route_gets_no_headers(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    for _ in range(5):
        seen = await get(http, gateway.url + "/api/read/x", key.secret)
        assert seen.status == 200
        assert not [h for h in seen.headers if h.lower().startswith("ratelimit")]


async def test_route_and_key_limits_both_count_and_the_tighter_is_shown(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    async def scenario() -> list[Seen]:
        org = await keys.org("rl")
        created = await keys.service.create_key(ACTOR, org, "both", ["read"], rate_limit="10/1h")
        ISSUED.append(created.secret)
        limited = [
            await get(http, gateway.url + "/api/limited/x", created.secret) for _ in range(5)
        ]
        return [*limited, await get(http, gateway.url + "/api/read/x", created.secret)]

    seen = await in_one_window(scenario)
    assert statuses(seen) == [200, 200, 200, 429, 429, 200]
    # On the route, its 3/1h has fewer left than the key's 10/1h.
    assert [(s.limit, s.remaining) for s in seen[:5]] == [
        ("3", "2"),
        ("3", "1"),
        ("3", "0"),
        ("3", "0"),
        ("3", "0"),
    ]
    # The two refused requests did not use the key's own budget: 3 used before this one.
    assert (seen[5].limit, seen[5].remaining) == ("10", "6")


async def test_changing_a_key_limit_takes_effect_like_a_scope_change(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    url = gateway.url + "/api/read/x"

    async def until(secret: str, done: Callable[[Seen], bool]) -> Seen:
        for _ in range(40):  # SPEC §5: within a second; allow two
            seen = await get(http, url, secret)
            if done(seen):
                return seen
            await asyncio.sleep(0.05)
        raise AssertionError(f"still {seen.status} {dict(seen.headers)}")

    async def scenario() -> list[Seen]:
        key = await keys.key(["read"])
        before = await get(http, url, key.secret)  # cached in every tier, without a limit
        await keys.cli_ok("keys", "update", key.id, "--rate-limit", "2/1h")
        first = await until(key.secret, lambda s: s.limit is not None)
        rest = [await get(http, url, key.secret) for _ in range(2)]
        await keys.cli_ok("keys", "update", key.id, "--rate-limit", "none")
        after = await until(key.secret, lambda s: s.status == 200)
        return [before, first, *rest, after]

    seen = await in_one_window(scenario)
    assert statuses(seen) == [200, 200, 200, 429, 200]
    assert [(s.limit, s.remaining) for s in seen] == [
        (None, None),
        ("2", "1"),
        ("2", "0"),
        ("2", "0"),
        (None, None),
    ]


# --- the upstream's own headers, the log, the metrics -------------------------------------


async def test_upstream_ratelimit_headers_replaced_only_where_the_gateway_limits(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    async def scenario() -> list[Seen]:
        key = await keys.key(["read"])
        limited = await get(http, gateway.url + "/probe/own-limits", key.secret)
        # Where the gateway has no limit, the upstream's headers pass through untouched
        # (its RateLimit-Reset is the upstream's: not part of the window check).
        plain.append(await get(http, gateway.url + "/probe/upstream-limits", key.secret))
        return [limited]

    plain: list[Seen] = []
    [limited] = await in_one_window(scenario)
    assert limited.status == 200
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        assert len(limited.headers.getall(name)) == 1, name
    assert (limited.limit, limited.remaining) == ("5", "4")  # a fresh key
    limited.assert_reset_matches_the_clock()
    assert limited.headers["X-Probe-End"] == "kept"
    assert plain[-1].status == 200
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        assert plain[-1].headers.getall(name) == [UPSTREAM_LIMITS[name]]


async def test_refusal_is_logged_and_counted_as_rate_limited(
    gateway: GatewayProcess, stack: Stack, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    before = await scrape(http, gateway.admin_url)
    refusals: list[tuple[str, str]] = []  # (request id, key's display prefix)

    async def scenario() -> list[Seen]:
        key = await keys.key(["read"])
        seen = []
        for i in range(5):
            request_id = f"rl-{key.id}-{i}"
            async with http.get(
                gateway.url + "/api/limited/x", headers={**key.auth, "X-Request-Id": request_id}
            ) as reply:
                await reply.read()
                seen.append(Seen(reply.status, reply.headers, None, time.time()))
                if reply.status == 429:
                    refusals.append((request_id, key.display_prefix))
        return seen

    seen = await in_one_window(scenario)
    assert statuses(seen) == [200, 200, 200, 429, 429]
    refused_id, display_prefix = refusals[-1]
    record = await _until_logged(gateway, refused_id)
    assert (record["status"], record["outcome"], record["route"]) == (
        429,
        "rate_limited",
        "limited",
    )
    assert record["key"] == display_prefix
    after = await scrape(http, gateway.admin_url)
    changes = moved(before, after, "keygate_requests_total")
    refused = labels(route="limited", method="GET", code="429", outcome="rate_limited")
    assert changes.get(refused, 0) >= 1, changes


# --- several gateways, and Redis away -------------------------------------------------------


@pytest.fixture(scope="module")
def second_gateway(stack: Stack) -> Iterator[GatewayProcess]:
    gw = start_gateway(
        stack.config(), stack.log_dir, gateway_env(stack.stores), name="gateway-rl-2"
    )
    with stopped_cleanly(gw):
        yield gw
    assert_no_key_in(gw.process.output(), "the second gateway's output")


@pytest.fixture(scope="module")
def no_redis_gateway(stack: Stack) -> Iterator[GatewayProcess]:
    env = {**gateway_env(stack.stores), "KEYGATE_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"}
    gw = start_gateway(stack.config(), stack.log_dir, env, name="gateway-no-redis")
    with stopped_cleanly(gw):
        yield gw
    assert_no_key_in(gw.process.output(), "the no-redis gateway's output")


async def test_two_gateways_share_one_budget(
    gateway: GatewayProcess,
    second_gateway: GatewayProcess,
    http: aiohttp.ClientSession,
    keys: KeyMaker,
) -> None:
    async def scenario() -> list[Seen]:
        key = await keys.key(["read"])
        order = [gateway, second_gateway, gateway, second_gateway, gateway]
        return [await get(http, gw.url + "/api/limited/x", key.secret) for gw in order]

    seen = await in_one_window(scenario)
    assert statuses(seen) == [200, 200, 200, 429, 429]
    assert [s.remaining for s in seen] == ["2", "1", "0", "0", "0"]


async def test_an_entry_written_by_a_build_before_rate_limits_does_not_lift_a_limit(
    gateway: GatewayProcess,
    second_gateway: GatewayProcess,
    stack: Stack,
    http: aiohttp.ClientSession,
    keys: KeyMaker,
) -> None:
    """Rolling deploy: an older gateway writes a key's entry without its limit, at the
    same version; gateways of this build read it as a miss and enforce the limit."""
    client = aioredis.Redis.from_url(stack.stores.redis_url)
    entries: list[str] = []

    async def scenario() -> list[Seen]:
        org = await keys.org("rl")
        created = await keys.service.create_key(
            ACTOR, org, "old-entry", ["read"], rate_limit="3/1h"
        )
        ISSUED.append(created.secret)
        entry = "keygate:key:" + created.key.id
        entries.append(entry)
        # Another gateway verifies the key: Redis holds its state and verifier, and this
        # gateway has never seen the key, so it will read both from Redis.
        first = await get(http, second_gateway.url + "/api/read/x", created.secret)
        for _ in range(100):
            if any(cast(bytes, f).startswith(b"b.") for f in await client.hkeys(entry)):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the verifier never reached Redis")
        state = json.loads(cast(bytes, await client.hget(entry, "s")))
        del state["rate_limit"]  # what the older build writes
        await client.hset(entry, "s", json.dumps(state))
        rest = [await get(http, gateway.url + "/api/read/x", created.secret) for _ in range(3)]
        return [first, *rest]

    try:
        seen = await in_one_window(scenario)
        assert statuses(seen) == [200, 200, 200, 429]
        assert [(s.limit, s.remaining) for s in seen] == [
            ("3", "2"),
            ("3", "1"),
            ("3", "0"),
            ("3", "0"),
        ]
        # The gateway refilled the entry from Postgres, in this build's shape.
        refilled = json.loads(cast(bytes, await client.hget(entries[-1], "s")))
        assert refilled["rate_limit"] == [3, 3600]
    finally:
        await client.aclose()


async def test_redis_down_still_serves_and_limits_per_process(
    no_redis_gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    async def scenario() -> list[Seen]:
        key = await keys.key(["read"])
        limited = [
            await get(http, no_redis_gateway.url + "/api/limited/x", key.secret) for _ in range(5)
        ]
        plain = [
            await get(http, no_redis_gateway.url + "/api/read/x", key.secret) for _ in range(3)
        ]
        return limited + plain

    seen = await in_one_window(scenario)
    # Never a 5xx, never refused because of Redis: the limit holds in the process.
    assert statuses(seen) == [200, 200, 200, 429, 429, 200, 200, 200]
    assert [s.remaining for s in seen[:5]] == ["2", "1", "0", "0", "0"]
    assert_rate_limited(seen[3], 3)
    # One warning for the outage, not one per request.
    output = no_redis_gateway.process.output()
    assert output.count("rate limits are counted by each gateway process") == 1, output[-3000:]
    samples = await scrape(http, no_redis_gateway.admin_url)
    assert samples[("keygate_store_errors_total", labels(store="redis"))] >= 1
