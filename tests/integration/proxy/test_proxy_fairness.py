"""One tenant's flood does not delay another tenant's first request (issue 10, class 5).

Through a real `keygate serve` (its own process here: argon2 at a cost of ~20 ms per
verify, 2 verify threads, 127.0.0.1 trusted as a proxy so that each flood request can
come from its own address in `X-Forwarded-For`, out of reach of the per-client limit),
real PostgreSQL and Redis. Measured in counts, never in times: how many argon2 verifies
the gateway completes while org B's never-seen key makes its first request, read from
`keygate_key_verifications_total` on the admin /metrics. The latency view of the same
scenario is tests/perf/bench_fairness.py; the component-level proof is
tests/integration/consistency/test_key_lookup.py.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_config
from gateway.keys.service import open_key_service
from tests.integration.proxy.harness import Stack
from tests.support.configs import gateway_env
from tests.support.credentials import assert_no_key_in
from tests.support.gateway_process import GatewayProcess, start_gateway, stopped_cleanly
from tests.support.keys import KeyMaker, MadeKey

SLOTS = 2  # keys.verify_threads
# ~150 ms of CPU per verify on a small CI machine (the default cost is ~40 ms there): long
# next to the time a request spends outside the verify queue. That time is process hops
# (client, gateway, PostgreSQL, Redis, upstream) each waiting for a CPU behind the busy
# verify threads, so it does not shrink with the verify cost: with time_cost 2 (~25 ms)
# a starved run (coverage, a CPU hog beside it) measured medians of 8-10 verifies; with
# 12, 5-6. The cost is read from each stored hash, so the keys below are made with this
# gateway's config.
ARGON2 = {"time_cost": 12, "memory_kib": 14336, "parallelism": 1}
QUEUE_PER_ORG = 32  # keys.max_queued_verifies_per_org's default: this test does not set it
A_KEYS = 8  # the per-id cap (10 x 20 per 10 s) leaves the flood 1600 verifies: plenty
FLOODERS = QUEUE_PER_ORG + 16  # more than A's queue holds: it stays full, the rest get 503
ROUNDS = 5  # B's first requests measured, each with a fresh key of its own
# The count bound (see the test's docstring): two rounds of the threads inside the queue
# (the verifies running when B's is queued; A's one turn, B's own), and at most two more
# rounds for the milliseconds B's request spends outside the queue. First come first
# served, B's count would be about QUEUE_PER_ORG + SLOTS + 1 = 35.
BOUND = 4 * SLOTS
# The bound holds for the typical (median) round. One round on a starved CI machine can
# spend longer outside the queue (7, 6, 9 were seen with coverage and pytest on two cores),
# so a single round is only held to half the first-come-first-served count: still a
# failure for a queue that serves A's backlog before B.
FCFS = QUEUE_PER_ORG + SLOTS + 1
ROUND_CEILING = FCFS // 2
TIMEOUT = aiohttp.ClientTimeout(total=60)


@pytest.fixture(scope="module")
def fair_gateway(stack: Stack) -> Iterator[GatewayProcess]:
    config = stack.config()
    config["keys"] = {**config["keys"], "argon2": ARGON2, "verify_threads": SLOTS}
    config["server"] = {**config["server"], "trusted_proxies": ["127.0.0.1/32"]}
    # Thousands of refused flood requests: nothing to learn from their access log lines.
    config["log"] = {**config["log"], "access_log": False}
    gw = start_gateway(config, stack.log_dir, gateway_env(stack.stores), name="gateway-fair")
    with stopped_cleanly(gw):
        yield gw
    assert_no_key_in(gw.process.output(), "the fairness gateway's output")


@pytest.fixture
async def fair_keys(fair_gateway: GatewayProcess) -> AsyncIterator[KeyMaker]:
    """Keys hashed at this gateway's argon2 cost (the verify cost is the stored hash's)."""
    config = load_config(str(fair_gateway.config_path), env=fair_gateway.env)
    async with open_key_service(config) as service:
        yield KeyMaker(service, fair_gateway.config_path, fair_gateway.env)


async def _verifications(http: aiohttp.ClientSession, gw: GatewayProcess) -> Counter[str]:
    """argon2 verifies completed so far, by result (`valid`, `invalid`). `throttled` is
    left out: it counts attempts refused 429 *without* running argon2."""
    async with http.get(gw.admin_url + "/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    done: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "keygate_key_verifications":
            for s in family.samples:
                result = s.labels.get("result", "")
                if s.name.endswith("_total") and result in ("valid", "invalid"):
                    done[result] += int(s.value)
    return done


@dataclass
class Flood:
    """Wrong secrets (valid checksums) for org A's key ids, each request from its own
    address, from FLOODERS clients that send again as soon as a verify answers them."""

    gw: GatewayProcess
    keys: list[MadeKey]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    statuses: Counter[int] = field(default_factory=Counter)
    # Statuses answered while one of B's requests was being measured (reset per round).
    during: Counter[int] = field(default_factory=Counter)
    measuring: bool = False
    sent: int = 0

    def address(self) -> str:
        self.sent += 1
        n = self.sent
        return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    async def flooder(self, http: aiohttp.ClientSession, i: int) -> None:
        while not self.stop.is_set():
            key = self.keys[(i + self.sent) % len(self.keys)]
            headers = {
                "Authorization": f"Bearer {key.with_secret(secrets.token_hex(16))}",
                "X-Forwarded-For": self.address(),
            }
            async with http.get(self.gw.url + "/api/read/flood", headers=headers) as reply:
                body = await reply.json()
            code = body["error"]["code"]
            assert (reply.status, code) in {
                (401, "invalid_api_key"),
                (503, "auth_unavailable"),
                (429, "too_many_attempts"),
            }, (reply.status, body)
            self.statuses[reply.status] += 1
            if self.measuring:
                self.during[reply.status] += 1
            if reply.status != 401:
                # Refused at once (A's queue full, or throttled): the queue is full anyway,
                # so a short pause keeps the refusals from spinning the gateway's event
                # loop without making the flood any less saturating. Shorter than the
                # ~0.4 s a measured round of B's lasts (3 verifies' time), so that every
                # round sees some of these refusals: with 0.1 s, a round once saw none.
                await asyncio.sleep(0.04)


async def test_one_tenants_flood_delays_anothers_first_request_by_a_few_verifies(
    fair_gateway: GatewayProcess, fair_keys: KeyMaker
) -> None:
    """Org A's key ids are flooded with wrong secrets from ever-new addresses, enough to
    keep A's verify queue at its bound (QUEUE_PER_ORG waiting, the rest answered 503).
    Then org B's fresh key makes its first request, which needs one argon2 verify.

    The bound counts the argon2 verifies completed between the /metrics read just before
    B's request is sent and the one just after its 200 arrives, B's own included. From
    the per-org round robin (gateway/auth/verify_queue.py), with SLOTS threads:
    - when B's verify is queued, at most SLOTS verifies are running: they complete
      (SLOTS);
    - the orgs with waiting verifies take turns and B's org joins the turn order behind
      the only other one, A: of the threads freed by those running verifies, one starts
      A's next verify and the next starts B's. While B's runs, the other threads' verifies
      (started earlier, as costly) complete about one each; then B's own: SLOTS more.
      (With SLOTS = 2: R1 ends, A1 starts; R2 ends, B starts; A1 ends, A2 starts; B
      ends: 4. A2 started after B's verify and costs as much: it ends after B's.)
    So B's wait in the queue and its verify see 2 x SLOTS verifies complete, however
    many of A's are queued. Outside the queue (HTTP parsing, the Redis and PostgreSQL
    reads before it; the upstream and the scrapes after it) B's request spends a few
    milliseconds of a CPU-starved event loop, while the busy threads go on completing
    A's verifies: up to SLOTS per verify's worth of time. On a 2-core machine (under
    coverage, with a CPU hog beside it) the counts were 5-7, i.e. 1-3 outside the queue, so two
    rounds are allowed: BOUND = 4 x SLOTS for the median round, and no single round
    above half the first-come-first-served count. Served first come first served, B's
    verify waits behind every one of A's queued verifies: QUEUE_PER_ORG + SLOTS + 1
    (35; 34-36 measured), and behind every flooding org's (up to
    keys.max_queued_verifies, 256: seconds).
    """
    org_a, org_b = await fair_keys.org("flooded"), await fair_keys.org("quiet")
    a_keys = [await fair_keys.key(["read"], org=org_a) for _ in range(A_KEYS)]
    b_keys = [await fair_keys.key(["read"], org=org_b) for _ in range(ROUNDS)]
    flood = Flood(fair_gateway, a_keys)
    counts: list[int] = []
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        aiohttp.ClientSession(
            timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=0)
        ) as flood_http,
    ):
        idle = await _verifications(http, fair_gateway)
        # Open (and keep alive) the connection B's requests will use: no TCP handshake
        # inside the measured interval.
        async with http.get(fair_gateway.url + "/public/warm") as reply:
            assert reply.status == 200
            await reply.read()
        flooders = [asyncio.create_task(flood.flooder(flood_http, i)) for i in range(FLOODERS)]
        try:
            # Saturated: A's queue has overflowed (503s) and verifies keep completing.
            for _ in range(1200):  # polls, ~60 s at most on a slow machine
                started = sum((await _verifications(http, fair_gateway) - idle).values())
                if flood.statuses[503] >= FLOODERS and started >= 4 * SLOTS:
                    break
                assert not any(t.done() for t in flooders), [
                    t.exception() for t in flooders if t.done()
                ]
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the flood never saturated A's queue: {flood.statuses}")
            for b in b_keys:
                flood.during.clear()
                flood.measuring = True
                before = await _verifications(http, fair_gateway)
                async with http.get(
                    fair_gateway.url + "/api/read/first",
                    headers={**b.auth, "X-Forwarded-For": "192.0.2.7"},
                ) as reply:
                    await reply.read()
                    status = reply.status
                after = await _verifications(http, fair_gateway)
                flood.measuring = False
                ran = after - before
                counts.append(sum(ran.values()))
                print(
                    f"B's first request: {status}; verifies meanwhile: {dict(ran)}; "
                    f"flood answers meanwhile: {dict(flood.during)}"
                )
                assert status == 200
                assert ran["valid"] == 1  # B's own verify: it really was a first use
                # A's queue was at its bound while B waited (the flood was being refused 503)
                # and A's verifies kept completing: B did not just find the threads idle.
                assert flood.during[503] > 0, flood.during
                assert ran["invalid"] >= 1, ran
                assert sum(ran.values()) <= ROUND_CEILING, (counts, ran)
        finally:
            flood.stop.set()
            results = await asyncio.wait_for(
                asyncio.gather(*flooders, return_exceptions=True), timeout=60
            )
        total = await _verifications(http, fair_gateway) - idle
    print(
        f"verifies per B request: {counts} (bound {BOUND}); flood answers "
        f"{dict(flood.statuses)}; verifies during the test: {dict(total)}"
    )
    assert statistics.median(counts) <= BOUND, counts
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, failed
    assert fair_gateway.process.alive(), fair_gateway.process.tail()
