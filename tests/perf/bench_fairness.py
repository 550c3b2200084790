"""Fairness benchmark (issue 10, class 5; not a test): how long another tenant's first
request takes while one tenant floods the gateway with wrong secrets.

    .venv/bin/python tests/perf/bench_fairness.py [--rounds 20] [--concurrency 64]

Starts, on 127.0.0.1 and all stopped at the end: embedded PostgreSQL + Redis in a temp
dir (migrated), the demo upstream, and one `keygate serve` (1 worker, default argon2
cost, 2 verify threads). Org A gets 4 keys; org B gets a fresh key per round, created
with the default argon2 cost, so each B request is a first use that needs one verify.

1. Baseline: B's first request, --rounds times, with nothing else running.
2. Flood: --concurrency clients send wrong secrets for A's 4 key ids without pause, each
   from its own loopback address (127.0.1.x: the per-client limit does not stop them
   all, only the per-id cap, the per-org queue bound and the fair queue do), while B's
   first requests are measured again.

Prints the median, p95 and max of B's first-request latency in both phases and what the
flood got (statuses). With the per-org round robin, B waits for at most the verifies
already running plus one of A's per thread: a few tens of ms, not seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.config import load_config  # noqa: E402
from gateway.keys.format import base62_checksum  # noqa: E402
from gateway.keys.models import Actor  # noqa: E402
from gateway.keys.service import open_key_service  # noqa: E402
from tests.support.gateway_process import (  # noqa: E402
    start_gateway,
    start_upstream,
    stopped_cleanly,
)
from tests.support.stores import start_stores  # noqa: E402

ACTOR = Actor(principal="bench:fairness")


async def first_request(http: aiohttp.ClientSession, url: str, secret: str) -> float:
    started = time.perf_counter()
    async with http.get(url + "/api/read/b", headers={"Authorization": f"Bearer {secret}"}) as r:
        await r.read()
        assert r.status == 200, r.status
    return time.perf_counter() - started


def summary(label: str, times: list[float]) -> str:
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    return (
        f"{label}: median {statistics.median(times) * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms (n={len(times)})"
    )


async def bench(
    url: str, config_path: Path, env: dict[str, str], rounds: int, concurrency: int
) -> None:
    config = load_config(str(config_path), env=env)
    async with open_key_service(config) as service, aiohttp.ClientSession() as http:
        org_a, org_b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
        await service.create_org(ACTOR, org_a)
        await service.create_org(ACTOR, org_b)
        a_keys = [(await service.create_key(ACTOR, org_a, "a", ["read"])).key for _ in range(4)]

        async def b_first() -> float:
            created = await service.create_key(ACTOR, org_b, "b", ["read"])
            return await first_request(http, url, created.secret)

        baseline = [await b_first() for _ in range(rounds)]
        statuses: dict[int, int] = {}
        stop = asyncio.Event()

        async def attacker(i: int) -> None:
            connector = aiohttp.TCPConnector(local_addr=(f"127.0.1.{i % 250 + 1}", 0))
            async with aiohttp.ClientSession(connector=connector) as own:
                while not stop.is_set():
                    key = a_keys[i % len(a_keys)]
                    body = key.display_prefix + secrets.token_hex(16)
                    wrong = body + base62_checksum(body)
                    async with own.get(
                        url + "/api/read/a", headers={"Authorization": f"Bearer {wrong}"}
                    ) as r:
                        await r.read()
                        statuses[r.status] = statuses.get(r.status, 0) + 1

        flood = [asyncio.create_task(attacker(i)) for i in range(concurrency)]
        await asyncio.sleep(1.0)  # the flood is in full swing
        flooded = [await b_first() for _ in range(rounds)]
        stop.set()
        await asyncio.gather(*flood)
    print(summary("B's first request, no flood  ", baseline))
    print(summary("B's first request, A flooding", flooded))
    print(f"A's flood statuses: {dict(sorted(statuses.items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="keygate-bench-fairness-"))
    with start_stores() as stores:
        upstream = start_upstream(log_dir)
        try:
            config = {
                "dev": False,
                "keys": {"verify_threads": 2},
                "server": {"store_timeout": "2s"},
                "log": {"level": "warning", "format": "json", "access_log": False},
                "upstreams": {"echo": {"url": upstream.url}},
                "routes": [{"path": "/api/read/**", "upstream": "echo", "scopes": ["read"]}],
            }
            env = {
                "KEYGATE_SECRET": secrets.token_urlsafe(48),
                "KEYGATE_DATABASE_URL": stores.database_url,
                "KEYGATE_REDIS_URL": stores.redis_url,
                "KEYGATE_ADMIN_TOKEN": secrets.token_urlsafe(32),
            }
            gw = start_gateway(config, log_dir, env, name="fairness")
            with stopped_cleanly(gw):
                asyncio.run(bench(gw.url, gw.config_path, gw.env, args.rounds, args.concurrency))
        finally:
            upstream.process.stop(expect_code=0)


if __name__ == "__main__":
    main()
