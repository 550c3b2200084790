"""Consistency benchmarks (issue 4, not a test): revocation propagation across instances,
and the cost of `last_used_at` stamping.

    .venv/bin/python tests/perf/bench_consistency.py [--revocations 100] [--duration 5]
                                                    [--rounds 6] [--keys 200]

Starts, all on 127.0.0.1 and all stopped at the end: embedded PostgreSQL + Redis in a
temp dir (migrated), the fixed-response upstream (tests/perf/fixed_upstream.py), then

1. Propagation: two `keygate serve --workers 2` instances (then again with a revoker
   whose Redis URL points at a closed port: only PostgreSQL's NOTIFY tells the
   gateways). For each of --revocations keys: create it through the service, warm both
   instances (16 requests on fresh connections each, so both workers of each instance
   cache it), then revoke it through
   the service while polling both instances on fresh connections; the key counts as
   refused on an instance once 3 rounds in a row (2 requests each) were refused. The
   time is measured from the start of the revoke call (transaction, Redis write and
   publish included) to the first of those rounds on the slower instance.
2. Stamping on vs off: two single-worker gateways, identical except
   `last_used.flush_interval`: 1s ("on": a flush per second, the worst realistic
   setting) and 24h ("off": stamps are coalesced in memory but never written while the
   benchmark runs). wrk cycles through --keys keys (so each flush writes that many rows).
   With two or more CPUs the gateway is pinned alone on CPU 1, wrk and the upstream on
   CPU 0. The runs alternate on/off for --rounds rounds; the medians are compared.

See tests/perf/README.md ("Consistency benchmarks") for the method and latest figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config import load_config  # noqa: E402
from gateway.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402
from gateway.keys.models import Actor  # noqa: E402
from gateway.keys.service import KeyService, open_key_service  # noqa: E402
from gateway.store.db import Database  # noqa: E402
from gateway.store.migrate import migrate  # noqa: E402
from tests.support.gateway_process import (  # noqa: E402
    GatewayProcess,
    ManagedProcess,
    spawn,
    start_gateway,
)

SECRET = "bench-consistency-secret-" + "x" * 32
ACTOR = Actor(principal="bench")
CHEAP_ARGON2 = {"time_cost": 1, "memory_kib": 1024, "parallelism": 1}
PATH = "/api/v1/items/42"


def gateway_config(upstream_url: str, flush_interval: str) -> dict[str, Any]:
    return {
        "dev": False,
        "keys": {"argon2": CHEAP_ARGON2},
        "cache": {"local_ttl": "5s"},
        "last_used": {"flush_interval": flush_interval},
        "server": {"drain_timeout": "2s", "store_timeout": "1s"},
        "log": {"level": "warning", "format": "json", "access_log": False},
        "upstreams": {"api": {"url": upstream_url, "connect_timeout": "2s", "timeout": "30s"}},
        "routes": [
            {
                "path": "/api/v1/items/**",
                "methods": ["GET"],
                "upstream": "api",
                "scopes": ["read"],
                "name": "items",
            }
        ],
    }


# ---------------------------------------------------------------------------- propagation


async def _refused(session: aiohttp.ClientSession, url: str, secret: str) -> bool:
    async with session.get(url + PATH, headers={"Authorization": f"Bearer {secret}"}) as reply:
        await reply.read()
        if reply.status not in (200, 401):
            raise RuntimeError(f"{url}: unexpected {reply.status}")
        return reply.status == 401


async def _until_refused(
    session: aiohttp.ClientSession, url: str, secret: str, limit: float = 10.0
) -> float:
    """time.perf_counter() of the first of 3 rounds in a row in which 2 requests on fresh
    connections were both refused."""
    streak_start, streak = 0.0, 0
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        at = time.perf_counter()
        refused = await asyncio.gather(*(_refused(session, url, secret) for _ in range(2)))
        if all(refused):
            streak_start, streak = (streak_start, streak + 1) if streak else (at, 1)
            if streak == 3:
                return streak_start
        else:
            streak = 0
    raise RuntimeError(f"{url} still accepted a revoked key after {limit}s")


async def propagation(service: KeyService, urls: list[str], count: int) -> dict[str, list[float]]:
    org = f"bench-{int(time.time())}"
    await service.create_org(ACTOR, org)
    times: dict[str, list[float]] = {"propagation": [], "revoke_call": []}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0)
    ) as session:
        for _ in range(count):
            created = await service.create_key(ACTOR, org, "bench", ["read"])
            secret = created.secret
            for url in urls:
                refused = await asyncio.gather(*(_refused(session, url, secret) for _ in range(16)))
                if any(refused):
                    raise RuntimeError("a fresh key was refused while warming")
            started = time.perf_counter()
            pollers = [asyncio.create_task(_until_refused(session, url, secret)) for url in urls]
            await service.revoke_key(ACTOR, created.key.id, reason="bench")
            times["revoke_call"].append(time.perf_counter() - started)
            refused_at = await asyncio.gather(*pollers)
            times["propagation"].append(max(refused_at) - started)
    return times


# ---------------------------------------------------------------------------- throughput

WRK_SCRIPT = """
local keys = {}
for line in io.lines(os.getenv("BENCH_KEYS")) do keys[#keys + 1] = line end
local i = 0
function request()
  i = i % #keys + 1
  return wrk.format("GET", "%s", {["Authorization"] = "Bearer " .. keys[i]})
end
"""


def run_wrk(
    url: str, script: Path, keys_file: Path, duration: float, connections: int, cpus: str | None
) -> tuple[float, int, int]:
    """(requests/s, requests, non-2xx + socket errors)."""
    args = ["taskset", "-c", cpus] if cpus else []
    args += [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(
        args,
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
        env={**os.environ, "BENCH_KEYS": str(keys_file)},
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return rps, total, errors


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def flushes(gw: GatewayProcess) -> float:
    with urllib.request.urlopen(gw.admin_url + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(r"^keygate_last_used_flushes_total\s+([\d.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def make_keys(service: KeyService, count: int) -> list[str]:
    org = f"bench-rps-{int(time.time())}"
    await service.create_org(ACTOR, org)
    return [(await service.create_key(ACTOR, org, f"k{i}", ["read"])).secret for i in range(count)]


async def warm_all(url: str, secrets: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for secret in secrets:
            async with session.get(
                url + PATH, headers={"Authorization": f"Bearer {secret}"}
            ) as reply:
                await reply.read()
                if reply.status != 200:
                    raise RuntimeError(f"warm-up: {reply.status}")


def pin(pid: int, cpus: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


# ---------------------------------------------------------------------------- main


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace, work: Path) -> None:
    pg, rd = EmbeddedPostgres(work / "pg"), EmbeddedRedis(work / "redis")
    procs: list[ManagedProcess] = []
    gateways: list[GatewayProcess] = []
    two_cpus = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    try:
        pg.start()
        rd.start()
        db = Database(pg.url)
        try:
            await migrate(db)
        finally:
            await db.close()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")},
            "KEYGATE_SECRET": SECRET,
            "KEYGATE_DATABASE_URL": pg.url,
            "KEYGATE_REDIS_URL": rd.url,
        }
        up_port = free_port()
        upstream_argv = [sys.executable, str(HERE / "fixed_upstream.py"), "--port", str(up_port)]
        if two_cpus:
            upstream_argv = ["taskset", "-c", "0", *upstream_argv]
        procs.append(spawn("upstream", upstream_argv, work))
        upstream = f"http://127.0.0.1:{up_port}"
        await asyncio.sleep(1.0)  # the upstream binds its port

        # 1. Propagation across two instances of two workers.
        fleet = [
            start_gateway(gateway_config(upstream, "5s"), work, env, name=f"fleet-{n}", workers=2)
            for n in "ab"
        ]
        gateways += fleet
        config = load_config(str(fleet[0].config_path), env=env)
        async with open_key_service(config) as service:
            times = await propagation(service, [gw.url for gw in fleet], args.revocations)
            secrets = await make_keys(service, args.keys)
        # 1b. The same, by a revoker that cannot reach Redis: only PostgreSQL's NOTIFY tells.
        blind = load_config(
            str(fleet[0].config_path),
            env={**env, "KEYGATE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
        )
        async with open_key_service(blind) as service:
            no_redis = await propagation(service, [gw.url for gw in fleet], args.revocations)
        for gw in fleet:
            gw.process.stop(expect_code=0)

        # 2. Requests/s with stamping on (flush every 1 s) and off (24 h).
        on = start_gateway(gateway_config(upstream, "1s"), work, env, name="stamp-on", workers=1)
        off = start_gateway(gateway_config(upstream, "24h"), work, env, name="stamp-off", workers=1)
        gateways += [on, off]
        keys_file, script = work / "keys.txt", work / "cycle.lua"
        keys_file.write_text("\n".join(secrets) + "\n")
        script.write_text(WRK_SCRIPT.replace("%s", PATH))
        for gw in (on, off):
            if two_cpus:
                pin(gw.process.pid, "1")
            await warm_all(gw.url, secrets)
        wrk_cpus = "0" if two_cpus else None
        results: dict[str, list[float]] = {"on": [], "off": []}
        cpu_us: dict[str, list[float]] = {"on": [], "off": []}
        flushed = flushes(on)
        for r in range(args.rounds):
            order = [("on", on), ("off", off)] if r % 2 == 0 else [("off", off), ("on", on)]
            for label, gw in order:
                run_wrk(gw.url, script, keys_file, 1.0, args.connections, wrk_cpus)  # settle
                cpu_before = cpu_seconds(gw.process.pid)
                rps, total, errors = run_wrk(
                    gw.url, script, keys_file, args.duration, args.connections, wrk_cpus
                )
                cpu = (cpu_seconds(gw.process.pid) - cpu_before) / total * 1e6
                if errors:
                    raise RuntimeError(f"{label}: {errors} errors")
                results[label].append(rps)
                cpu_us[label].append(cpu)
                print(
                    f"  round {r + 1} stamping {label:3}: {rps:8.0f} req/s"
                    f"  {cpu:6.1f} us CPU/request",
                    flush=True,
                )
        flushed = flushes(on) - flushed
        off_flushes = flushes(off)
        for gw in (on, off):
            gw.process.stop(expect_code=0)
    finally:
        for gw in gateways:
            gw.process.kill()
        for proc in procs:
            proc.kill()
        rd.destroy()
        pg.destroy()

    prop = [t * 1000 for t in times["propagation"]]
    call = [t * 1000 for t in times["revoke_call"]]
    print()
    print(f"Revocation propagation, 2 instances x 2 workers, {len(prop)} revocations (ms):")
    print(
        f"  revoke call (commit + Redis write + publish): p50 {pct(call, 0.5):.1f}"
        f"  p99 {pct(call, 0.99):.1f}"
    )
    print(
        f"  refused by every worker, from the call start: p50 {pct(prop, 0.5):.1f}"
        f"  p99 {pct(prop, 0.99):.1f}  max {max(prop):.1f}"
    )
    blind_prop = [t * 1000 for t in no_redis["propagation"]]
    blind_call = [t * 1000 for t in no_redis["revoke_call"]]
    print(f"Revoker without Redis (PostgreSQL NOTIFY only), {len(blind_prop)} revocations (ms):")
    print(
        f"  revoke call (commit; Redis refused the connection): p50 {pct(blind_call, 0.5):.1f}"
        f"  p99 {pct(blind_call, 0.99):.1f}"
    )
    print(
        f"  refused by every worker, from the call start: p50 {pct(blind_prop, 0.5):.1f}"
        f"  p99 {pct(blind_prop, 0.99):.1f}  max {max(blind_prop):.1f}"
    )
    med_on, med_off = statistics.median(results["on"]), statistics.median(results["off"])
    diff = (med_off - med_on) / med_off * 100
    cpu_on, cpu_off = statistics.median(cpu_us["on"]), statistics.median(cpu_us["off"])
    cpu_diff = (cpu_on - cpu_off) / cpu_off * 100
    print()
    print(
        f"Stamping, 1 worker{' pinned to CPU 1' if two_cpus else ''}, {args.keys} keys,"
        f" {args.connections} connections, {args.rounds} x {args.duration:g} s each:"
    )
    print(
        f"  on  (flush_interval 1s):  median {med_on:8.0f} req/s, {cpu_on:6.1f} us CPU/request"
        f"  ({flushed:.0f} flushes during the runs)"
    )
    print(
        f"  off (flush_interval 24h): median {med_off:8.0f} req/s, {cpu_off:6.1f} us CPU/request"
        f"  ({off_flushes:.0f} flushes)"
    )
    print(
        f"  on vs off: requests/s {-diff:+.1f}%, CPU per request {cpu_diff:+.1f}%"
        " (target: within 3%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--revocations", type=int, default=100)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="keygate-bench-consistency-"))
    try:
        asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
