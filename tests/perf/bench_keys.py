"""Active-key-count sweep (issue 15, "Benchmark (not a test)"): a cached request should cost
the same with 100,000 active keys as with one.

    .venv/bin/python tests/perf/bench_keys.py [--keys 1,1000,10000,100000] [--workers 1,2]
        [--duration 10] [--warmup 5] [--max-entries N] [--local-ttl S]
    .venv/bin/python tests/perf/bench_keys.py --soak 10 [--soak-keys 100000] [--soak-workers 1]

Starts, all on 127.0.0.1 and all stopped at the end (bench_proxy.py's helpers): embedded
PostgreSQL + Redis, the fixed upstream, and for every (keys, workers) pair a fresh
`python -m gateway serve`. Keys are minted once, up to the largest count, with cheap
argon2 parameters (time_cost 1, memory 8 KiB: the same in the gateway's config, so the
first use of a key is a cheap verify and no rehash); their strings go to a file that a
wrk Lua script reads (the first N lines for N active keys).

Per scenario: Redis is emptied, the gateway started, every key used once per worker
count in a sequential pass (the first use runs argon2; the Redis entry then carries the
verifier), then wrk with a random key per request (X-API-Key) for --warmup seconds, then
the measured run. Tier figures are the /metrics deltas of keygate_key_cache_requests_total
over the measured run (the local hits of the fastest path are counted by a plain counter,
metrics.LOCAL_HITS, flushed into the same counter once a second and before every scrape:
the script waits 1.5 s before each scrape so every worker has flushed). RSS per worker
from /proc/<pid>/status; Redis used_memory and MEMORY USAGE of one entry.

Minted keys get `updated_at` moved back by a day (no version change: no trigger, no
NOTIFY): a key changed within the Redis TTL is re-written into Redis and invalidated in
every worker by the re-sync at start and every 30 s (key_changes.resync_recent_changes),
which would measure a mass-mint, not steady use. --fresh-keys keeps them recent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_proxy import (  # noqa: E402
    BENCH_PATH,
    PYTHON,
    SECRET,
    Procs,
    _children,
    cpu_seconds,
    wait_http,
)

from gateway.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402

ORG = "bench"
CHEAP_ARGON2 = {"time_cost": 1, "memory_kib": 8, "parallelism": 1}
TIERS = (
    ("local", "hit"),
    ("local", "miss"),
    ("redis", "hit"),
    ("redis", "miss"),
    ("postgres", "hit"),
    ("postgres", "miss"),
)


# ---------------------------------------------------------------------------- minting


async def mint(
    pg_url: str, count: int, mode: str, concurrency: int, fresh: bool
) -> tuple[list[str], float]:
    """`count` keys of org `bench` (scope read, no limit); returns (keys, seconds)."""
    from gateway.config import Argon2Params, load_config
    from gateway.keys.hashing import SecretHasher
    from gateway.keys.models import Actor
    from gateway.keys.service import KeyService
    from gateway.store.db import Database
    from gateway.store.migrate import migrate

    base = load_config(str(ROOT / "config/keygate.example.yaml"), {}).keys
    import dataclasses

    keys_cfg = dataclasses.replace(base, argon2=Argon2Params(**CHEAP_ARGON2))
    db = Database(pg_url, max_size=concurrency)
    hasher = SecretHasher(keys_cfg.argon2, threads=4)
    service = KeyService(db, keys_cfg, hasher)
    actor = Actor(principal="bench")
    out: list[str] = []
    try:
        await migrate(db)
        await service.create_org(actor, ORG, "Benchmark org")
        started = time.perf_counter()
        if mode == "service":
            sem = asyncio.Semaphore(concurrency)

            async def one(i: int) -> str:
                async with sem:
                    created = await service.create_key(actor, ORG, f"k{i}", ["read"])
                    return created.secret

            out = list(await asyncio.gather(*(one(i) for i in range(count))))
        else:
            out = await _mint_batches(db, keys_cfg, hasher, count, concurrency)
        if not fresh:
            async with db.connection() as conn:
                # No version change: neither the touch trigger nor NOTIFY fires.
                await conn.execute(
                    "UPDATE api_keys SET updated_at = now() - interval '1 day' WHERE org = $1",
                    ORG,
                )
        return out, time.perf_counter() - started
    finally:
        await db.close()
        hasher.close()


async def _mint_batches(db, keys_cfg, hasher, count: int, concurrency: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Keys made as KeyService does (generate_key, argon2 hash, ApiKey, queries.insert_key),
    without its per-key transaction and audit row: batches of 500 per transaction."""
    from gateway.keys import format as key_format
    from gateway.keys.models import ApiKey
    from gateway.store import queries

    prefix = keys_cfg.prefixes["live"]
    now = datetime.now(UTC)
    generated = [key_format.generate_key(prefix) for _ in range(count)]
    with ThreadPoolExecutor(4) as pool:  # argon2-cffi releases the GIL
        hashes = list(
            pool.map(hasher.hash, [parts.secret for _, parts in generated], chunksize=256)
        )
    drafts = [
        ApiKey(
            id=parts.key_id,
            org=ORG,
            name=f"k{i}",
            prefix=prefix,
            env="live",
            scopes=("read",),
            metadata={},
            created_at=now,
            created_by="bench",
            expires_at=None,
            last_used_at=None,
            revoked_at=None,
            revoked_by=None,
            revoke_reason=None,
            rolled_from=None,
            version=1,
            rate_limit=None,
            secret_hash=secret_hash,
        )
        for i, ((_, parts), secret_hash) in enumerate(zip(generated, hashes, strict=True))
    ]
    batches = [drafts[i : i + 500] for i in range(0, count, 500)]
    sem = asyncio.Semaphore(concurrency)

    async def insert(batch: list[ApiKey]) -> None:
        async with sem, db.transaction() as conn:
            for draft in batch:
                await queries.insert_key(conn, draft)

    await asyncio.gather(*(insert(b) for b in batches))
    return [full for full, _ in generated]


# ---------------------------------------------------------------------------- wrk + Lua

LUA = """\
-- Keys from a file (the first N lines); "random": one at random per request;
-- "sequential": key i for request i, wrapping, and the thread stops after `total`
-- responses (a warm pass). "delay" > 0: pause before each request (mean ms, dithered).
local path, n, mode, total, delay_ms = "{path}", {n}, "{mode}", {total}, {delay}
local keys = {{}}
for line in io.lines(path) do
  if #keys >= n then break end
  keys[#keys + 1] = line
end
n = #keys
local i, done = 0, 0
local headers = {{}}

function init(args)
  math.randomseed(os.time() * 1000 + (tonumber(tostring({{}}):sub(8), 16) or 0) % 100000)
end

function request()
  local k
  if mode == "random" then
    k = keys[math.random(n)]
  else
    k = keys[(i % n) + 1]
    i = i + 1
  end
  headers["X-API-Key"] = k
  return wrk.format("GET", "{bench_path}", headers)
end

if delay_ms > 0 then
  local base = math.floor(delay_ms)
  local frac = delay_ms - base
  function delay()
    if math.random() < frac then return base + 1 end
    return base
  end
end

if mode == "sequential" then
  function response(status, headers, body)
    done = done + 1
    if done == total then
      wrk.thread:stop()
      local f = io.open("{marker}", "w")  -- the script sends wrk SIGINT then
      if f then f:close() end
    end
  end
end
"""


def write_lua(
    tmp: Path, keys_file: Path, n: int, mode: str, total: int = 0, delay: float = 0.0
) -> Path:
    path = tmp / f"keys-{mode}-{n}-{total}-{delay:.3f}.lua"
    path.write_text(
        LUA.format(
            path=keys_file,
            marker=str(path) + ".done",
            n=n,
            mode=mode,
            total=total,
            delay=f"{delay:.4f}",
            bench_path=BENCH_PATH,
        )
    )
    return path


@dataclass
class Wrk:
    rps: float
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)([a-z]+)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk_args(
    url: str, lua: Path, connections: int, duration: float, threads: int, cpus: str | None
) -> list[str]:
    args = ["taskset", "-c", cpus] if cpus is not None else []
    return [
        *args,
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(lua),
        url,
    ]


def parse_wrk(out: str) -> Wrk:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    pct = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    seconds = 0.0
    if total:
        seconds = float(total.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}.get(
            total.group(3), 1.0
        )
    return Wrk(
        rps=float(rps.group(1)) if rps else 0.0,
        requests=int(total.group(1)) if total else 0,
        seconds=seconds,
        p50_ms=_ms(pct.get("50", "nan")),
        p99_ms=_ms(pct.get("99", "nan")),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )


def run_wrk(
    url: str, lua: Path, connections: int, duration: float, threads: int, cpus: str | None
) -> Wrk:
    out = subprocess.run(
        wrk_args(url, lua, connections, duration, threads, cpus),
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    return parse_wrk(out)


def run_wrk_until_done(
    url: str, lua: Path, connections: int, threads: int, cpus: str | None, limit: float = 1800
) -> Wrk:
    """A sequential pass: wrk's thread stops after `total` responses, but wrk itself sleeps
    out its -d; the script writes a marker file then, and wrk gets SIGINT (it prints its
    summary and exits)."""
    marker = Path(str(lua) + ".done")
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen(
        wrk_args(url, lua, connections, limit, threads, cpus),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + limit + 30
    while proc.poll() is None and not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    return parse_wrk(out)


# ---------------------------------------------------------------------------- observation


def scrape(admin: int) -> dict[tuple[str, str], float]:
    """keygate_key_cache_requests_total by (tier, result), plus argon2 verifies."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("keygate_key_cache_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            out[(labels["tier"], labels["result"])] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("keygate_key_verifications_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            out[("argon2", labels["result"])] = float(line.rsplit(" ", 1)[1])
    return out


def workers_of(pid: int, count: int) -> list[int]:
    """The serving processes: the `serve` process itself with 1 worker, else its spawned
    children (not multiprocessing's resource tracker)."""
    if count == 1:
        return [pid]
    found = []
    for child in _children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            found.append(child)
    return sorted(found)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def redis_client(url: str):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(url)


# ---------------------------------------------------------------------------- scenarios


@dataclass
class Result:
    keys: int
    workers: int
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    tiers: dict[tuple[str, str], float] = field(default_factory=dict)
    rss: list[float] = field(default_factory=list)
    redis_used: int = 0
    redis_entries: int = 0
    entry_bytes: int = 0
    warm_s: float = 0.0
    warm_bad: int = 0
    bad: int = 0


@dataclass
class Stack:
    tmp: Path
    procs: Procs
    pg_url: str
    redis_url: str
    keys_file: Path
    args: argparse.Namespace


def gateway_config(stack: Stack, path: Path, port: int, admin: int, upstream: int) -> None:
    a = stack.args
    cache = []
    if a.max_entries is not None:
        cache.append(f"max_entries: {a.max_entries}")
    if a.local_ttl is not None:
        cache.append(f"local_ttl: {a.local_ttl}s")
    argon2 = ", ".join(f"{k}: {v}" for k, v in CHEAP_ARGON2.items())
    path.write_text(f"""\
listen: {{proxy: "127.0.0.1:{port}", admin: "127.0.0.1:{admin}"}}
database_url: {stack.pg_url}
redis_url: {stack.redis_url}
admin: {{allow_unauthenticated_loopback: true}}
log: {{level: warning, format: json, access_log: false}}
server: {{drain_timeout: 2s}}
keys:
  argon2: {{{argon2}}}
  max_queued_verifies_per_org: 1024
  max_queued_verifies: 1024
{"cache: {" + ", ".join(cache) + "}" if cache else ""}
{f"last_used: {{flush_interval: {a.last_used_interval}s}}" if a.last_used_interval else ""}
upstreams:
  api: {{url: "http://127.0.0.1:{upstream}", connect_timeout: 2s, timeout: 30s}}
routes:
  - {{path: "/api/v1/items/**", methods: [GET], upstream: api, scopes: [read], name: items}}
  - {{path: "/health", upstream: api, public: true, name: health}}
""")


@dataclass
class Running:
    gateway: subprocess.Popen[bytes]
    upstream: subprocess.Popen[bytes]
    port: int
    admin: int
    wrk_cpus: str | None
    workers: list[int]


def place(workers: int, pin: bool) -> tuple[str | None, str | None, str | None]:
    """(upstream, gateway, wrk) CPUs, as bench_proxy: 1 worker alone on CPU 1."""
    if not pin or (os.cpu_count() or 1) < 2 or workers != 1:
        return None, None, None
    return "0", "1", "0"


def start(stack: Stack, workers: int) -> Running:
    up_cpus, gw_cpus, wrk_cpus = place(workers, stack.args.pin)
    up_port = free_port()
    upstream = stack.procs.start(
        [PYTHON, str(HERE / "fixed_upstream.py"), "--port", str(up_port), "--workers", "1"],
        log=stack.tmp / "upstream.log",
        cpus=up_cpus,
    )
    wait_http(f"http://127.0.0.1:{up_port}/", 30, proc=upstream)
    port, admin = free_port(), free_port()
    cfg = stack.tmp / f"keygate-{workers}.yaml"
    gateway_config(stack, cfg, port, admin, up_port)
    gateway = stack.procs.start(
        [PYTHON, "-m", "gateway", "serve", "--config", str(cfg), "--workers", str(workers)],
        env={
            **os.environ,
            "KEYGATE_SECRET": SECRET,
            "KEYGATE_CONFIG": str(cfg),
            "KEYGATE_DATABASE_URL": stack.pg_url,
            "KEYGATE_REDIS_URL": stack.redis_url,
            "PYTHONPATH": str(stack.args.root),
        },
        log=stack.tmp / f"keygate-{workers}.log",
        cpus=gw_cpus,
        cwd=stack.args.root,
    )
    wait_http(f"http://127.0.0.1:{admin}/readyz", 60, proc=gateway)
    pids: list[int] = []
    for _ in range(50):
        pids = workers_of(gateway.pid, workers)
        if len(pids) == workers:
            break
        time.sleep(0.1)
    return Running(gateway, upstream, port, admin, wrk_cpus, pids)


def stop(stack: Stack, run: Running) -> None:
    stack.procs.stop(run.gateway)
    stack.procs.stop(run.upstream)


def warm(stack: Stack, run: Running, n: int, workers: int, out: Result) -> None:
    """Every key once per worker (sequential passes), then random keys for --warmup s."""
    a = stack.args
    url = f"http://127.0.0.1:{run.port}{BENCH_PATH}"
    total = max(n * a.warm_passes_per_worker * workers, 20 * workers)
    seq = write_lua(stack.tmp, stack.keys_file, n, "sequential", total)
    t0 = time.monotonic()
    # Few connections: the first use of a key queues an argon2 verify.
    w = run_wrk_until_done(url, seq, min(a.connections, 16), a.threads, run.wrk_cpus)
    out.warm_s = time.monotonic() - t0
    out.warm_bad = w.non_2xx + w.errors
    rnd = write_lua(stack.tmp, stack.keys_file, used_keys(stack, n), "random")
    run_wrk(url, rnd, a.connections, a.warmup, a.threads, run.wrk_cpus)


def used_keys(stack: Stack, n: int) -> int:
    """Keys the random runs choose from: all n cached, or with --use-keys only the first
    few (what holding n keys costs, apart from touching them)."""
    return min(n, stack.args.use_keys) if stack.args.use_keys else n


def measure(stack: Stack, n: int, workers: int, out: Result) -> None:
    a = stack.args
    rc = redis_client(stack.redis_url)
    rc.flushdb()
    run = start(stack, workers)
    try:
        warm(stack, run, n, workers, out)
        url = f"http://127.0.0.1:{run.port}{BENCH_PATH}"
        rnd = write_lua(stack.tmp, stack.keys_file, used_keys(stack, n), "random")
        time.sleep(1.5)  # every worker's tallies flushed (once a second)
        before = scrape(run.admin)
        spies = start_profiles(stack, run, n, workers)
        cpu0 = cpu_seconds(run.gateway.pid)
        w = run_wrk(url, rnd, a.connections, a.duration, a.threads, run.wrk_cpus)
        cpu = cpu_seconds(run.gateway.pid) - cpu0
        for spy in spies:
            spy.wait(timeout=60)
        note_profiled_requests(stack, run, n, workers, w.requests)
        time.sleep(1.5)
        after = scrape(run.admin)
        out.rps.append(w.rps)
        out.p50.append(w.p50_ms)
        out.p99.append(w.p99_ms)
        out.cpu_us.append(cpu / w.requests * 1e6 if w.requests else float("nan"))
        out.bad += w.non_2xx + w.errors
        for k in set(before) | set(after):
            out.tiers[k] = out.tiers.get(k, 0.0) + after.get(k, 0.0) - before.get(k, 0.0)
        out.rss = [rss_mib(p) for p in run.workers]
        info = rc.info("memory")
        out.redis_used = int(info["used_memory"])
        out.redis_entries = sum(1 for _ in rc.scan_iter("keygate:key:*", count=1000))
        one = next(iter(rc.scan_iter("keygate:key:*", count=100)), None)
        out.entry_bytes = int(rc.memory_usage(one) or 0) if one is not None else 0
        print(
            f"  {n:>7} keys, {workers} worker(s): {w.rps:8.0f} req/s  "
            f"p50 {w.p50_ms:.2f} ms  CPU {out.cpu_us[-1]:.0f} us/req  "
            f"local hit {_share(out.tiers, 'local', 'hit'):.1%}  "
            f"RSS {', '.join(f'{r:.0f}' for r in out.rss)} MiB  warm {out.warm_s:.1f} s"
            + (f"  !! {w.non_2xx} non-2xx, {w.errors} socket errors" if out.bad else ""),
            flush=True,
        )
    finally:
        stop(stack, run)
        rc.close()


def _share(tiers: dict[tuple[str, str], float], tier: str, result: str) -> float:
    lookups = tiers.get(("local", "hit"), 0.0) + tiers.get(("local", "miss"), 0.0)
    return tiers.get((tier, result), 0.0) / lookups if lookups else float("nan")


def _reads(tiers: dict[tuple[str, str], float], tier: str) -> float:
    """Reads of a tier (hits and misses, background refreshes included) per lookup."""
    return _share(tiers, tier, "hit") + _share(tiers, tier, "miss")


def report(results: list[Result], redis_base: int) -> None:
    print(
        "\n| active keys | workers | req/s | vs 1 key | p50 ms | p99 ms | CPU us/req | vs 1 key "
        "| local hit | Redis reads | Postgres reads | argon2 | RSS/worker MiB "
        "| Redis used_memory | Redis entries | one entry (MEMORY USAGE) |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    base = {r.workers: statistics.median(r.rps) for r in results if r.keys == 1}
    base_cpu = {r.workers: statistics.median(r.cpu_us) for r in results if r.keys == 1}
    for r in results:
        rps = statistics.median(r.rps)
        ref = base.get(r.workers)
        argon = r.tiers.get(("argon2", "valid"), 0.0) + r.tiers.get(("argon2", "invalid"), 0.0)
        print(
            f"| {r.keys:,} | {r.workers} | {rps:.0f} | {rps / ref:.2f}x | "
            if ref
            else f"| {r.keys:,} | {r.workers} | {rps:.0f} | - | ",
            end="",
        )
        print(
            f"{statistics.median(r.p50):.2f} | {statistics.median(r.p99):.2f} | "
            f"{statistics.median(r.cpu_us):.0f} | "
            f"{statistics.median(r.cpu_us) / base_cpu.get(r.workers, float('nan')):.2f}x | "
            f"{_share(r.tiers, 'local', 'hit'):.2%} | {_reads(r.tiers, 'redis'):.2%} | "
            f"{_reads(r.tiers, 'postgres'):.3%} | {argon:.0f} | "
            f"{' / '.join(f'{x:.0f}' for x in r.rss)} | "
            f"{r.redis_used / 2**20:.1f} MiB ({(r.redis_used - redis_base) / 2**20:+.1f}) | "
            f"{r.redis_entries:,} | {r.entry_bytes} B |"
        )
    print(
        "\nShares are per key lookup in the measured window (lookups = local hit + local"
        " miss); Redis/Postgres reads are hits + misses of that tier per lookup (background"
        " refreshes, if any, included: they read without a local miss). argon2: verifies"
        " in the window. Redis used_memory in parentheses: above the empty Redis."
    )
    for r in results:
        if r.bad or r.warm_bad:
            print(f"  !! {r.keys} keys, {r.workers} w: {r.bad} bad (measured), {r.warm_bad} (warm)")


# ---------------------------------------------------------------------------- soak


def soak(stack: Stack) -> None:
    a = stack.args
    n, workers = a.soak_keys, a.soak_workers
    rc = redis_client(stack.redis_url)
    rc.flushdb()
    run = start(stack, workers)
    out = Result(n, workers)
    url = f"http://127.0.0.1:{run.port}{BENCH_PATH}"
    conns = a.connections
    try:
        warm(stack, run, n, workers, out)
        rnd = write_lua(stack.tmp, stack.keys_file, used_keys(stack, n), "random")
        capacity = run_wrk(url, rnd, conns, 10, a.threads, run.wrk_cpus)
        target = a.soak_fraction * capacity.rps
        # Closed loop with a per-connection pause: rate = conns / (pause + latency).
        delay = max(0.0, conns / target * 1000 - capacity.p50_ms)
        for _ in range(3):  # calibrate the pause on short runs
            got = run_wrk(
                url,
                write_lua(stack.tmp, stack.keys_file, n, "random", delay=delay),
                conns,
                5,
                a.threads,
                run.wrk_cpus,
            )
            print(f"  calibration: pause {delay:.2f} ms -> {got.rps:.0f} req/s", flush=True)
            if abs(got.rps / target - 1) < 0.04:
                break
            delay = max(0.0, (delay + 0.3) * got.rps / target - 0.3)
        print(
            f"soak: {n:,} keys, {workers} worker(s): capacity {capacity.rps:.0f} req/s; "
            f"target {target:.0f} req/s ({a.soak_fraction:.0%}) with {conns} connections "
            f"pausing {delay:.2f} ms; {a.soak:g} min, RSS every {a.soak_interval:g} s",
            flush=True,
        )
        lua = write_lua(stack.tmp, stack.keys_file, n, "random", delay=delay)
        seconds = a.soak * 60
        proc = subprocess.Popen(
            wrk_args(url, lua, conns, seconds, a.threads, run.wrk_cpus),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        samples: list[tuple[float, list[float], int]] = []
        t0 = time.monotonic()
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - t0
                rss = [rss_mib(p) for p in run.workers]
                used = int(rc.info("memory")["used_memory"])
                samples.append((elapsed, rss, used))
                print(
                    f"  t={elapsed:6.0f} s  RSS {' / '.join(f'{x:.1f}' for x in rss)} MiB  "
                    f"Redis {used / 2**20:.1f} MiB",
                    flush=True,
                )
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(a.soak_interval)
            w = parse_wrk(proc.stdout.read() if proc.stdout else "")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        print(
            f"soak achieved {w.rps:.0f} req/s ({w.rps / capacity.rps:.0%} of capacity), "
            f"p50 {w.p50_ms:.2f} ms, p99 {w.p99_ms:.2f} ms, {w.non_2xx} non-2xx, "
            f"{w.errors} socket errors"
        )
        judge_flat(samples)
    finally:
        stop(stack, run)
        rc.close()


def judge_flat(samples: list[tuple[float, list[float], int]]) -> None:
    """Flat: after the first minute, the least-squares slope of each worker's RSS, over the
    whole soak, stays under 1 MiB and 1 % of its RSS."""
    steady = [s for s in samples if s[0] >= 60] or samples
    if len(steady) < 3:
        print("  too few samples to judge")
        return
    span = steady[-1][0] - steady[0][0]
    for i in range(len(steady[0][1])):
        xs = [s[0] for s in steady]
        ys = [s[1][i] for s in steady]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
        growth = slope * span
        flat = abs(growth) < max(1.0, 0.01 * my)
        print(
            f"  worker {i}: RSS {min(ys):.1f}..{max(ys):.1f} MiB after the first minute, "
            f"trend {slope * 60:+.3f} MiB/min ({growth:+.2f} MiB over {span:.0f} s): "
            f"{'FLAT' if flat else 'GROWING'}"
        )


# ---------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x]


def start_profiles(stack: Stack, run: Running, n: int, workers: int) -> list[subprocess.Popen]:  # type: ignore[type-arg]
    """With --profile DIR: each worker sampled for the measured run, into
    DIR/<keys>keys-<workers>w-<pid>.txt: by py-spy as collapsed stacks (for flamegraph.pl
    or grep), or with --perf by `perf record` (software clock, so it works in a VM without
    hardware counters) into that name + ".perf", for perf_diff.py."""
    if stack.args.profile is None:
        return []
    stack.args.profile.mkdir(parents=True, exist_ok=True)
    duration = str(int(stack.args.duration))
    out = [stack.args.profile / f"{n}keys-{workers}w-{pid}.txt" for pid in run.workers]
    if stack.args.perf:
        commands = [
            [
                *("perf", "record", "-e", "cpu-clock", "-F", "1999", "-g", "-p", str(pid)),
                *("-o", f"{path}.perf", "--", "sleep", duration),
            ]
            for pid, path in zip(run.workers, out, strict=True)
        ]
    else:
        commands = [
            [
                *(stack.args.py_spy, "record", "--pid", str(pid), "--rate", "250"),
                *("--duration", duration, "--format", "raw"),
                # py-spy reads C frames only from a paused process: --native or
                # --nonblocking, not both.
                "--native" if stack.args.native else "--nonblocking",
                *("-o", str(path)),
            ]
            for pid, path in zip(run.workers, out, strict=True)
        ]
    return [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for command in commands
    ]


def note_profiled_requests(stack: Stack, run: Running, n: int, workers: int, requests: int) -> None:
    """Beside each profile: the requests of the measured run, per worker (perf_diff.py
    divides samples by them)."""
    if stack.args.profile is None:
        return
    for pid in run.workers:
        path = stack.args.profile / f"{n}keys-{workers}w-{pid}.txt.requests"
        path.write_text(f"{requests / len(run.workers):.0f}\n")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=_ints, default=[1, 1000, 10000, 100000])
    p.add_argument("--workers", type=_ints, default=[1, 2])
    p.add_argument("--duration", type=float, default=10, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=5, help="random-key wrk before measuring")
    p.add_argument(
        "--warm-passes-per-worker",
        type=int,
        default=1,
        help="sequential passes over all keys per worker before the random warm-up",
    )
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1, help="rounds (medians of req/s shown)")
    p.add_argument("--max-entries", type=int, default=None, help="cache.max_entries")
    p.add_argument("--local-ttl", type=float, default=None, help="cache.local_ttl, seconds")
    p.add_argument(
        "--last-used-interval",
        type=float,
        default=None,
        help="last_used.flush_interval, seconds (a long one takes the stamps out of a run)",
    )
    p.add_argument(
        "--use-keys",
        type=int,
        default=0,
        help="every key is cached, but the random runs use only the first N",
    )
    p.add_argument("--mint", choices=("batch", "service"), default="batch")
    p.add_argument("--mint-concurrency", type=int, default=8)
    p.add_argument("--fresh-keys", action="store_true", help="keep updated_at = mint time")
    p.add_argument("--no-pin", dest="pin", action="store_false")
    p.add_argument(
        "--root",
        type=lambda x: Path(x).resolve(),
        default=ROOT,
        help="source tree whose gateway package serves (e.g. an export of HEAD)",
    )
    p.add_argument(
        "--profile",
        type=lambda x: Path(x).resolve(),
        default=None,
        help="directory: sample each worker with py-spy during the measured run",
    )
    p.add_argument("--py-spy", default="py-spy", help="the py-spy executable (with --profile)")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument(
        "--perf", action="store_true", help="with --profile: `perf record` instead of py-spy"
    )
    p.add_argument("--soak", type=float, default=0, help="minutes of soak instead of the sweep")
    p.add_argument("--soak-keys", type=int, default=100000)
    p.add_argument("--soak-workers", type=int, default=1)
    p.add_argument("--soak-fraction", type=float, default=0.8)
    p.add_argument("--soak-interval", type=float, default=10)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="keygate-keys-"))
    procs = Procs()
    pg = EmbeddedPostgres(tmp / "pg")
    rd = EmbeddedRedis(tmp / "redis")
    try:
        pg.start()
        rd.start()
        count = args.soak_keys if args.soak else max(args.keys)
        keys, took = asyncio.run(
            mint(pg.url, count, args.mint, args.mint_concurrency, args.fresh_keys)
        )
        print(
            f"minted {count:,} keys ({args.mint}, concurrency {args.mint_concurrency}, argon2 "
            f"t=1 m=8KiB) in {took:.1f} s: {count / took:.0f} keys/s",
            flush=True,
        )
        keys_file = tmp / "keys.txt"
        keys_file.write_text("\n".join(keys) + "\n")
        stack = Stack(tmp, procs, pg.url, rd.url, keys_file, args)
        if args.soak:
            soak(stack)
            return 0
        rc = redis_client(rd.url)
        rc.flushdb()
        redis_base = int(rc.info("memory")["used_memory"])
        rc.close()
        results = {(n, w): Result(n, w) for w in args.workers for n in args.keys}
        for round_ in range(args.repeat):
            print(f"\nRound {round_ + 1}/{args.repeat}", flush=True)
            for w in args.workers:
                for n in args.keys:
                    measure(stack, n, w, results[(n, w)])
        print(
            f"\nmax_entries {args.max_entries or 'default'}, local_ttl "
            f"{args.local_ttl or 'default'}; wrk -c{args.connections} -d{args.duration:g}s, "
            f"random key per request; empty Redis used_memory {redis_base / 2**20:.2f} MiB"
        )
        report(list(results.values()), redis_base)
    finally:
        procs.stop_all()
        rd.destroy()
        pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
