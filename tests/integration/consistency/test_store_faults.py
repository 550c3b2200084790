"""Store faults (SPEC §3 503 row, §5; issue 4): Redis and PostgreSQL stopped and restarted
under traffic, on this package's own embedded pair.

At every point: a valid cached key is served (no 5xx while only Redis is down), a key in
no cache gets 503 `auth_unavailable` with Retry-After while PostgreSQL is down (never
401), revoked and wrong keys are never let through, `/readyz` reports each outage (and
stays 200: the instance still serves), and recovery needs nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import redis

from tests.integration.consistency.conftest import (
    LOCAL_TTL,
    Fleet,
    Probe,
    probe,
    wait_store,
    warm,
    watch,
)
from tests.support.keys import KeyMaker, MadeKey, unknown_key

MARGIN = 1.0  # scheduling on a loaded 2-core machine
OUTAGE_SPAN = LOCAL_TTL + 1.0  # long enough for every local entry to expire meanwhile


@dataclass
class Traffic:
    """Requests with a fixed set of keys to every instance, labelled with the test phase."""

    http: aiohttp.ClientSession
    urls: list[str]
    secrets: dict[str, str]  # kind -> presented key
    phase: str = "before"
    seen: list[tuple[str, str, Probe]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            batch = [(kind, url) for kind in self.secrets for url in self.urls]
            began = self.phase
            results = await asyncio.gather(
                *(probe(self.http, url, self.secrets[kind]) for kind, url in batch)
            )
            # A batch in flight while the phase changed belongs to neither phase: its
            # requests may have been answered on either side of the change.
            phase = began if self.phase == began else f"{began}->{self.phase}"
            self.seen.extend((phase, kind, p) for (kind, _), p in zip(batch, results, strict=True))

    def outcomes(self, kind: str, phase: str | None = None) -> Counter[tuple[int, str | None]]:
        return Counter(
            (p.status, p.code)
            for ph, k, p in self.seen
            if k == kind and (phase is None or ph == phase)
        )

    def times(self, kind: str, phase: str) -> list[float]:
        return [p.took for ph, k, p in self.seen if k == kind and ph == phase]


@contextlib.asynccontextmanager
async def traffic(
    http: aiohttp.ClientSession, fleet: Fleet, secrets: dict[str, str]
) -> AsyncIterator[Traffic]:
    t = Traffic(http, [gw.url for gw in fleet.instances], secrets)
    task = asyncio.create_task(t.run())
    try:
        yield t
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def keys_for_traffic(
    keys: KeyMaker, http: aiohttp.ClientSession, fleet: Fleet
) -> tuple[MadeKey, dict[str, str]]:
    """A valid key warm in every cache tier, a revoked one, a wrong secret, an unknown id."""
    valid, revoked = await keys.key(), await keys.key()
    await warm(http, fleet.instances, valid)
    await warm(http, fleet.instances, revoked, per_instance=4)
    await keys.revoke(revoked.id)
    # The traffic counts every 200 of the revoked key as a leak, so it starts once the
    # revocation has reached every worker (the propagation bound is test_propagation's).
    urls = [gw.url for gw in fleet.instances]
    seen = await watch(http, urls, revoked.secret, since=time.time(), until=1.0 + MARGIN)
    assert seen.after(1.0) and not [p for p in seen.after(1.0) if p.status == 200], seen
    return valid, {
        "valid": valid.secret,
        "revoked": revoked.secret,
        "wrong": valid.with_secret("W" * 32),
        "unknown": unknown_key(),
    }


def summary(t: Traffic, phase: str) -> str:
    took = t.times("valid", phase)
    if not took:
        return f"{phase}: no requests"
    return (
        f"{phase}: {len(took)} valid-key requests, p50 {statistics.median(took) * 1000:.0f} ms,"
        f" max {max(took) * 1000:.0f} ms"
    )


def assert_never_let_through(t: Traffic) -> None:
    for kind in ("revoked", "wrong", "unknown"):
        leaks = Counter(ph for ph, k, p in t.seen if k == kind and p.status == 200)
        assert not leaks, (kind, "200s by phase:", leaks)
    assert set(t.outcomes("revoked")) <= {(401, "revoked_api_key")}, t.outcomes("revoked")
    assert set(t.outcomes("wrong")) <= {(401, "invalid_api_key")}, t.outcomes("wrong")


async def test_revocation_with_redis_down_is_refused_within_local_ttl_and_stays_refused(
    fleet_up: Fleet, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    stores = fleet_up.stores
    urls = [gw.url for gw in fleet_up.instances]
    key, other = await keys.key(), await keys.key()
    await warm(http, fleet_up.instances, key)
    await warm(http, fleet_up.instances, other)

    stores.redis.stop()  # the subscription of every worker is cut
    for gw in fleet_up.instances:
        await wait_store(http, gw, "redis", "down", limit=5)
    run = await keys.cli("keys", "revoke", key.id)  # cannot publish: Redis is down
    assert run.code == 0, run.err
    revoked = time.time()
    seen = await watch(http, urls, key.secret, since=revoked, until=LOCAL_TTL + MARGIN + 0.5)
    took = seen.refused_everywhere_after()
    print(
        f"Redis down: revocation refused everywhere {took * 1000:.0f} ms after `keygate keys "
        f"revoke` exited ({len(seen.probes)} probes)"
    )
    assert took <= LOCAL_TTL + MARGIN
    late = seen.after(LOCAL_TTL + MARGIN)
    assert late and {(p.status, p.code) for p in late} == {(401, "revoked_api_key")}
    # Another key is still served meanwhile, from the local cache or PostgreSQL.
    still = await asyncio.gather(*(probe(http, url, other.secret) for url in urls * 4))
    assert {p.status for p in still} == {200}, still

    # Redis comes back with its data, including the key's stale (active) entry.
    stores.start_redis()
    restarted = time.time()
    client = redis.Redis.from_url(stores.redis_url)
    try:
        assert client.exists(f"keygate:key:{key.id}") == 1
        after = await watch(http, urls, key.secret, since=restarted, until=0.0)
        back = [await wait_store(http, gw, "redis", "up", limit=10) for gw in fleet_up.instances]
        print(f"Redis restarted: /readyz reports it up again after {max(back) * 1000:.0f} ms")
        more = await watch(
            http,
            urls,
            key.secret,
            since=restarted,
            until=time.time() - restarted + LOCAL_TTL + MARGIN,
        )
        after.probes.extend(more.probes)
        outcomes = Counter((p.status, p.code) for p in after.probes)
        assert set(outcomes) == {(401, "revoked_api_key")}, outcomes
        state = client.hget(f"keygate:key:{key.id}", "s")
        assert state is not None and b'"revoked":true' in state, state  # repaired by re-sync
    finally:
        client.close()
    still = await asyncio.gather(*(probe(http, url, other.secret) for url in urls * 4))
    assert {p.status for p in still} == {200}, still


async def test_redis_killed_mid_traffic_then_restarted(
    fleet_up: Fleet, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    stores = fleet_up.stores
    _, secrets = await keys_for_traffic(keys, http, fleet_up)
    async with traffic(http, fleet_up, secrets) as t:
        await asyncio.sleep(0.5)
        t.phase = "redis-down"
        stores.redis.stop()
        down = [await wait_store(http, gw, "redis", "down", limit=5) for gw in fleet_up.instances]
        # A key in no cache is verified from PostgreSQL meanwhile.
        fresh = await keys.key()
        first = await asyncio.gather(
            *(probe(http, gw.url, fresh.secret) for gw in fleet_up.instances)
        )
        assert [p.status for p in first] == [200] * len(first), first
        await asyncio.sleep(OUTAGE_SPAN)
        t.phase = "redis-restarted"
        stores.start_redis()
        back = [await wait_store(http, gw, "redis", "up", limit=10) for gw in fleet_up.instances]
        await asyncio.sleep(1.0)
    print(
        f"/readyz (200 throughout) reported it down after {max(down) * 1000:.0f} ms, up "
        f"{max(back) * 1000:.0f} ms after the restart"
    )
    for phase in ("before", "redis-down", "redis-restarted"):
        print(summary(t, phase))
    assert set(t.outcomes("valid")) == {(200, None)}, t.outcomes("valid")
    assert t.outcomes("valid", "redis-down")[(200, None)] > 0
    assert set(t.outcomes("unknown")) <= {(401, "invalid_api_key")}, t.outcomes("unknown")
    assert_never_let_through(t)
    assert max(t.times("valid", "redis-down")) < 2 * 1.0 + MARGIN  # store_timeout bounds it


async def test_postgres_killed_mid_traffic_then_restarted(
    fleet_up: Fleet, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    stores = fleet_up.stores
    valid, secrets = await keys_for_traffic(keys, http, fleet_up)
    uncached = await keys.key()  # never presented while PostgreSQL is up
    before = (
        await stores.fetch(
            "SELECT (SELECT count(*) FROM api_keys) AS keys,"
            " (SELECT count(*) FROM audit_log) AS audit"
        )
    )[0]
    async with traffic(http, fleet_up, secrets) as t:
        await asyncio.sleep(0.5)
        t.phase = "pg-down"
        stores.pg.stop("immediate")
        down = [
            await wait_store(http, gw, "postgres", "down", limit=5) for gw in fleet_up.instances
        ]

        for gw in fleet_up.instances:
            for presented in (uncached.secret, uncached.with_secret("Q" * 32)):
                async with http.get(
                    gw.url + "/api/read/x", headers={"Authorization": f"Bearer {presented}"}
                ) as reply:
                    body = await reply.json()
                    assert (reply.status, body["error"]["code"]) == (503, "auth_unavailable")
                    retry_after = reply.headers.get("Retry-After", "")
                    assert retry_after.isdigit() and int(retry_after) > 0, retry_after
                    assert "WWW-Authenticate" not in reply.headers

        # Writes fail clearly and write nothing: the CLI ...
        revoke = await keys.cli("keys", "revoke", uncached.id)
        create = await keys.cli(
            "keys", "create", "--org", uncached.org, "--name", "x", "--scope", "read"
        )
        for run in (revoke, create):
            assert run.code == 1, (run.code, run.out, run.err)
            assert run.err.startswith("keygate: error: cannot reach the database"), run.err
            assert len(run.err.strip().splitlines()) == 1, run.err
            assert "Traceback" not in run.err
        # ... and the admin API.
        admin = fleet_up.instances[0].admin_url + "/admin/v1"
        root = {"Authorization": f"Bearer {fleet_up.admin_token}"}
        async with http.post(
            f"{admin}/orgs/{uncached.org}/keys/{uncached.id}/revoke", json={}, headers=root
        ) as reply:
            body = await reply.json()
            assert reply.status == 503, body
            assert body["error"]["code"] == "store_unavailable"

        await asyncio.sleep(max(0.0, OUTAGE_SPAN - 2.0))
        t.phase = "pg-restarted"
        stores.pg.start()
        back = [await wait_store(http, gw, "postgres", "up", limit=10) for gw in fleet_up.instances]
        recovered = await watch(
            http,
            [gw.url for gw in fleet_up.instances],
            uncached.secret,
            since=time.time(),
            until=1.0,
        )
        await asyncio.sleep(0.5)
    print(
        f"/readyz (200 throughout) reported it down after {max(down) * 1000:.0f} ms, up "
        f"{max(back) * 1000:.0f} ms after the restart"
    )
    for phase in ("before", "pg-down", "pg-restarted"):
        print(summary(t, phase))

    assert set(t.outcomes("valid")) == {(200, None)}, t.outcomes("valid")
    assert t.outcomes("valid", "pg-down")[(200, None)] > 0
    assert set(t.outcomes("unknown")) <= {(401, "invalid_api_key"), (503, "auth_unavailable")}
    assert set(t.outcomes("unknown", "before")) == {(401, "invalid_api_key")}
    assert_never_let_through(t)
    # Recovery needs nobody: once /readyz reports it up, the uncached key is verified again.
    assert {p.status for p in recovered.probes} == {200}, recovered.probes[:8]

    after = (
        await stores.fetch(
            "SELECT (SELECT count(*) FROM api_keys) AS keys,"
            " (SELECT count(*) FROM audit_log) AS audit"
        )
    )[0]
    assert dict(after) == dict(before)
    row = (await stores.fetch("SELECT revoked_at FROM api_keys WHERE id = $1", uncached.id))[0]
    assert row["revoked_at"] is None
    del valid


async def test_websocket_of_key_revoked_while_redis_down_closed_within_local_ttl(
    fleet_up: Fleet, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    key = await keys.key()
    gw = fleet_up.instances[0]
    async with http.ws_connect(gw.url + "/ws/events", headers=key.auth) as ws:
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "hello"
        fleet_up.stores.redis.stop()
        try:
            await wait_store(http, gw, "redis", "down", limit=5)
            run = await keys.cli("keys", "revoke", key.id)  # cannot publish: Redis is down
            assert run.code == 0, run.err
            revoked = time.monotonic()
            msg = await ws.receive(timeout=LOCAL_TTL + MARGIN + 2)
            took = time.monotonic() - revoked
        finally:
            fleet_up.stores.start_redis()
        print(
            f"Redis down: websocket closed with {ws.close_code} {took * 1000:.0f} ms after"
            " `keygate keys revoke` exited"
        )
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
        assert ws.close_code == 1008
        assert took <= LOCAL_TTL + MARGIN
    for instance in fleet_up.instances:
        await wait_store(http, instance, "redis", "up", limit=10)
