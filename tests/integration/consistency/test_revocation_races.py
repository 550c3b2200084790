"""A revocation racing a key's first verification, through a real gateway (SPEC §5).

The deterministic interleavings are in test_key_lookup.py; here the same race is run as a
user would meet it. Each round creates a key hashed at a deliberately high argon2 cost (so
its first verification takes a while), sends a burst of first requests, waits until the
gateway has read the key from PostgreSQL (its verification is now in flight), revokes the
key through the service, and keeps probing. The local TTL is 5 s: a key still accepted
more than 1 s after its revocation committed would be one that the in-flight verification
wrote back into a cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Argon2Params, load_config
from gateway.keys.service import open_key_service
from tests.integration.consistency.conftest import Fleet, Launcher, probe, watch
from tests.support.keys import KeyMaker

BOUND = 1.0  # SPEC §5
ROUNDS = 4
SLOW = Argon2Params(time_cost=3, memory_kib=65536, parallelism=1)  # ~100+ ms per verify


@pytest.fixture
async def slow_keys(fleet: Fleet) -> AsyncIterator[KeyMaker]:
    config = load_config(str(fleet.config_path), env=fleet.env)
    config = dataclasses.replace(config, keys=dataclasses.replace(config.keys, argon2=SLOW))
    async with open_key_service(config) as service:
        yield KeyMaker(service, fleet.config_path, fleet.env)


async def _postgres_hits(http: aiohttp.ClientSession, admin_url: str) -> float:
    async with http.get(admin_url + "/metrics") as reply:
        text = await reply.text()
    for family in text_string_to_metric_families(text):
        if family.name == "keygate_key_cache_requests":
            return sum(
                s.value
                for s in family.samples
                if s.name.endswith("_total") and s.labels == {"tier": "postgres", "result": "hit"}
            )
    return 0.0


async def test_revoked_during_its_first_verification_is_refused_after_the_bound(
    launch: Launcher, slow_keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    gw = launch("race", workers=1)
    in_flight = 0
    for round_ in range(ROUNDS):
        key = await slow_keys.key()
        hits = await _postgres_hits(http, gw.admin_url)
        burst = [asyncio.create_task(probe(http, gw.url, key.secret)) for _ in range(8)]
        for _ in range(2000):  # until the gateway read the key: now it is verifying
            if await _postgres_hits(http, gw.admin_url) != hits:
                break
            await asyncio.sleep(0.002)
        await slow_keys.revoke(key.id)
        committed = time.time()
        first = await asyncio.gather(*burst)
        in_flight += any(p.status == 200 or p.code == "revoked_api_key" for p in first)
        seen = await watch(http, [gw.url], key.secret, since=committed, until=BOUND + 1.5)
        late = [p for p in seen.accepted() if p.sent - committed > BOUND]
        print(
            f"round {round_}: burst {[p.status for p in first]}, "
            f"last accepted {seen.refused_everywhere_after() * 1000:.0f} ms after revoke"
        )
        assert not late, f"accepted {len(late)} times more than {BOUND}s after revocation"
        assert {p.code for p in seen.after(BOUND)} == {"revoked_api_key"}
    assert in_flight, "no round caught a verification in flight"
