"""Keygate throughput/latency benchmark against a plain aiohttp proxy (issue 3, not a test).

    .venv/bin/python tests/perf/bench_proxy.py [--duration 10] [--connections 32]
    make bench

Starts, all on 127.0.0.1 and all stopped at the end:
  embedded PostgreSQL + Redis in a temp dir (migrated; one org and one key created
  through KeyService), a local user-token issuer (an ES256 key pair whose JWKS this
  script serves from a thread; one token signed for the org, SPEC §11), a fixed-response
  upstream (tests/perf/fixed_upstream.py), and in turn each system under test: the
  upstream itself, the plain proxy (tests/perf/plain_proxy.py) and `python -m gateway
  serve`, with 1 and 2 workers, called with the cached API key and with the cached user
  token (same config, same route; the two alternate in order from round to round).
Each is warmed up (key or token cache filled on every worker, then a short wrk run), then
driven by wrk twice: throughput at --connections, latency at --latency-connections. The
table gives requests/s, p50, p99 and the CPU time the proxy processes spent per request.

--profile DIR additionally records Keygate (1 worker) under load with py-spy and prints
the functions where the time goes (needs py-spy: `.venv/bin/pip install py-spy`).
See tests/perf/README.md for the method and the latest figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from gateway.demo_issuer import DemoIssuer, generate_key, jwks  # noqa: E402
from gateway.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402

PYTHON = sys.executable
SECRET = "bench-secret-" + "x" * 40  # >= 32 bytes; loopback-only throwaway stack
BENCH_PATH = "/api/v1/items/42?view=full"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- processes


class Procs:
    """Every process started here, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        stdout_null: bool = True,
        cpus: str | None = None,
        cwd: Path = ROOT,
    ) -> subprocess.Popen[bytes]:
        err = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        if cpus is not None:  # children (spawned workers, threads) inherit the affinity
            args = ["taskset", "-c", cpus, *args]
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if stdout_null else err,
            stderr=err,
        )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_tree(proc.pid)
                proc.wait()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc, timeout=5)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _kill_tree(pid: int) -> None:
    for p in _tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process and all its live descendants."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def wait_http(
    url: str,
    timeout: float,
    headers: dict[str, str] | None = None,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers or {}), timeout=2
            ) as reply:
                if reply.status == 200:
                    return
                last = reply.status
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}")


def get_ok(url: str, headers: dict[str, str]) -> None:
    """One request on a fresh connection (so SO_REUSEPORT spreads them over workers)."""
    request = urllib.request.Request(url, headers={**headers, "Connection": "close"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{url}: {reply.status}")


# ---------------------------------------------------------------------------- stores, key


async def create_key(database_url: str, redis_url: str) -> str:
    from gateway.config import load_config
    from gateway.keys.hashing import SecretHasher
    from gateway.keys.models import Actor
    from gateway.keys.service import KeyService
    from gateway.store.db import Database
    from gateway.store.key_cache import RedisKeyCache
    from gateway.store.migrate import migrate

    keys = load_config(str(ROOT / "config/keygate.example.yaml"), {}).keys
    db = Database(database_url)
    hasher = SecretHasher(keys.argon2, threads=1)
    cache = RedisKeyCache.connect(redis_url, 600.0, 2.0, SECRET.encode())
    service = KeyService(db, keys, hasher, on_change=cache.key_changed)
    actor = Actor(principal="bench")
    try:
        await migrate(db)
        await service.create_org(actor, "bench", "Benchmark org")
        created = await service.create_key(actor, "bench", "bench key", ["read"])
        return created.secret
    finally:
        await cache.close()
        await db.close()
        hasher.close()


class LocalIssuer:
    """A user-token issuer on 127.0.0.1: an ES256 key pair made here, its JWKS served by
    a thread of this process (the gateway fetches it at start-up), tokens signed for the
    benchmark org. No network, no provider process."""

    AUDIENCE = "keygate-bench"

    def __init__(self) -> None:
        key = generate_key()
        body = json.dumps(jwks(key)).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the http.server API names it so
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = origin + "/bench-issuer"
        self.jwks_url = origin + "/bench-issuer/jwks.json"
        self.signer = DemoIssuer(key, self.issuer, self.AUDIENCE)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, org: str = "bench", scopes: tuple[str, ...] = ("read",)) -> str:
        """A token valid for a day: it stays cached (until its exp) for the whole run."""
        return self.signer.token(subject="bench-user", org=org, scopes=scopes, lifetime=86400)

    def config(self) -> str:
        """The `user_tokens:` section trusting this issuer."""
        return (
            f"user_tokens:\n"
            f"  - {{issuer: {self.issuer!r}, audience: {self.AUDIENCE}, "
            f"jwks_url: {self.jwks_url!r}, algorithms: [ES256]}}\n"
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def keygate_config(
    path: Path,
    proxy_port: int,
    admin_port: int,
    upstream_port: int,
    access_log: bool,
    pg_url: str,
    redis_url: str,
    user_tokens: str = "",
) -> None:
    """A Keygate config like the example's routes; `user_tokens` (a `user_tokens:`
    section, LocalIssuer.config) adds trusted issuers."""
    path.write_text(f"""\
listen: {{proxy: "127.0.0.1:{proxy_port}", admin: "127.0.0.1:{admin_port}"}}
database_url: {pg_url}
redis_url: {redis_url}
admin: {{allow_unauthenticated_loopback: true}}
log: {{level: warning, format: json, access_log: {str(access_log).lower()}}}
server: {{drain_timeout: 2s}}
upstreams:
  api: {{url: "http://127.0.0.1:{upstream_port}", connect_timeout: 2s, timeout: 30s}}
routes:
  - {{path: "/api/v1/sessions/**", methods: [GET], upstream: api, scopes: [read]}}
  - {{path: "/api/v1/sessions/**", methods: [POST, PUT, PATCH, DELETE], upstream: api,
     scopes: [manage]}}
  - {{path: "/api/v1/orgs/{{org}}/**", upstream: api, scopes: [read], org_param: org}}
  - {{path: "/api/v1/items/**", methods: [GET], upstream: api, scopes: [read], name: items}}
  - {{path: "/health", upstream: api, public: true, name: health}}
{user_tokens}""")


# ---------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    errors: int = 0
    cpu_us_per_req: float | None = None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(
    url: str, lua: Path, connections: int, duration: float, threads: int, cpus: str | None = None
) -> WrkResult:
    args = ["taskset", "-c", cpus] if cpus is not None else []
    args += [
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
    out = subprocess.run(
        args, capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        rps=rps,
        p50_ms=_ms(pct["50"]),
        p99_ms=_ms(pct["99"]),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )


# ---------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    label: str
    kind: str  # direct | plain | keygate (API key) | keygate-token (user token) | keygate-other
    workers: int
    access_log: bool = False
    root: Path = ROOT  # the source tree whose `gateway` package runs (--compare-root)
    throughput: list[WrkResult] = field(default_factory=list)
    latency: list[WrkResult] = field(default_factory=list)


@dataclass
class Env:
    tmp: Path
    procs: Procs
    upstream_port: int
    pg_url: str
    redis_url: str
    key: str
    lua: Path
    args: argparse.Namespace
    token: str = ""  # a user token from `issuer`, for the keygate-token targets
    token_lua: Path | None = None
    issuer: LocalIssuer | None = None

    def credential(self, kind: str) -> tuple[str, Path]:
        """The bearer credential and wrk script for a target kind."""
        if kind == "keygate-token":
            assert self.token_lua is not None
            return self.token, self.token_lua
        return self.key, self.lua


@dataclass
class Placement:
    """Which CPUs each process may use (None: any). See README "Method"."""

    upstream: str | None = None
    target: str | None = None
    wrk: str | None = None


def placement(sc: Scenario, pin: bool) -> Placement:
    if not pin or (os.cpu_count() or 1) < 2:
        return Placement()
    if sc.kind == "direct":
        return Placement(upstream="1", wrk="0")  # the upstream gets the server core
    if sc.workers == 1:
        return Placement(upstream="0", target="1", wrk="0")  # proxy alone on core 1
    return Placement()  # 2 workers: everything shares both cores


def start_upstream(env: Env, cpus: str | None) -> subprocess.Popen[bytes]:
    env.upstream_port = free_port()
    proc = env.procs.start(
        [
            PYTHON,
            str(HERE / "fixed_upstream.py"),
            "--port",
            str(env.upstream_port),
            "--workers",
            str(env.args.upstream_workers),
        ],
        log=env.tmp / "upstream.log",
        cpus=cpus,
    )
    wait_http(f"http://127.0.0.1:{env.upstream_port}/", 30, proc=proc)
    return proc


def start_target(
    env: Env, sc: Scenario, cpus: str | None = None
) -> tuple[subprocess.Popen[bytes] | None, int]:
    """Start the system under test; return (process or None for direct, port)."""
    if sc.kind == "direct":
        return None, env.upstream_port
    port = free_port()
    log = env.tmp / f"{sc.kind}-{sc.workers}.log"
    if sc.kind == "plain":
        proc = env.procs.start(
            [
                PYTHON,
                str(HERE / "plain_proxy.py"),
                "--port",
                str(port),
                "--upstream",
                f"http://127.0.0.1:{env.upstream_port}",
                "--workers",
                str(sc.workers),
            ],
            log=log,
            cpus=cpus,
        )
        wait_http(f"http://127.0.0.1:{port}/health", 30, proc=proc)
        return proc, port
    admin = free_port()
    cfg = env.tmp / f"keygate-{sc.workers}-{int(sc.access_log)}-{abs(hash(sc.root))}.yaml"
    # The key and token targets run the same config (issuer trusted in both); another
    # tree (--compare-root) may not know `user_tokens:`.
    tokens = env.issuer.config() if env.issuer is not None and sc.root == ROOT else ""
    keygate_config(
        cfg, port, admin, env.upstream_port, sc.access_log, env.pg_url, env.redis_url, tokens
    )
    proc = env.procs.start(
        [PYTHON, "-m", "gateway", "serve", "--config", str(cfg), "--workers", str(sc.workers)],
        env={
            **os.environ,
            "KEYGATE_SECRET": SECRET,
            "KEYGATE_CONFIG": str(cfg),
            "KEYGATE_DATABASE_URL": env.pg_url,
            "KEYGATE_REDIS_URL": env.redis_url,
            "PYTHONPATH": str(sc.root),
        },
        log=log,
        cpus=cpus,
        cwd=sc.root,
    )
    wait_http(f"http://127.0.0.1:{admin}/readyz", 30, proc=proc)
    return proc, port


def warm(
    env: Env, port: int, workers: int, wrk_cpus: str | None = None, kind: str = "keygate"
) -> None:
    """Fill the key (or token) cache of every worker: fresh connections land on random
    workers."""
    credential, lua = env.credential(kind)
    url = f"http://127.0.0.1:{port}{BENCH_PATH}"
    headers = {"Authorization": f"Bearer {credential}"}
    for _ in range(20 * workers):
        get_ok(url, headers)
    run_wrk(url, lua, env.args.connections, env.args.warmup, env.args.threads, wrk_cpus)


def measure(env: Env, sc: Scenario) -> None:
    where = placement(sc, env.args.pin)
    upstream = start_upstream(env, where.upstream)
    proc = None
    try:
        proc, port = start_target(env, sc, where.target)
        warm(env, port, sc.workers, where.wrk, sc.kind)
        _, lua = env.credential(sc.kind)
        url = f"http://127.0.0.1:{port}{BENCH_PATH}"
        measured = proc.pid if proc is not None else upstream.pid
        for conns, into in (
            (env.args.connections, sc.throughput),
            (env.args.latency_connections, sc.latency),
        ):
            cpu0, t0 = cpu_seconds(measured), time.monotonic()
            result = run_wrk(url, lua, conns, env.args.duration, env.args.threads, where.wrk)
            cpu = cpu_seconds(measured) - cpu0
            requests = result.rps * (time.monotonic() - t0)
            result.cpu_us_per_req = cpu / requests * 1e6 if requests else None
            into.append(result)
            if result.non_2xx or result.errors:
                print(
                    f"  !! {sc.label}: {result.non_2xx} non-2xx, {result.errors} socket errors",
                    flush=True,
                )
        print(
            f"  {sc.label:<44} {sc.throughput[-1].rps:>9.0f} req/s   "
            f"p50@c{env.args.latency_connections} {sc.latency[-1].p50_ms:.3f} ms",
            flush=True,
        )
    finally:
        if proc is not None:
            env.procs.stop(proc)
        env.procs.stop(upstream)


def profile(env: Env, out_dir: Path, native: bool, kind: str = "keygate") -> None:
    """py-spy record of one target (1 worker) under the throughput load."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sc = Scenario(f"{kind} 1w (profiled)", kind, 1)
    where = placement(sc, env.args.pin)
    upstream = start_upstream(env, where.upstream)
    proc, port = start_target(env, sc, where.target)
    assert proc is not None
    rate = 250
    _, lua = env.credential(kind)
    try:
        warm(env, port, 1, where.wrk, kind)
        raw = out_dir / f"{kind}-1w.collapsed"
        svg = out_dir / f"{kind}-1w.svg"
        duration = max(5, int(env.args.duration))
        cmd = [
            shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy"),
            "record",
            "-p",
            str(proc.pid),
            "-d",
            str(duration),
            "-r",
            str(rate),
            "--nonblocking",
        ]  # do not pause the target: its timing stays undisturbed
        if native:
            cmd.append("--native")
        url = f"http://127.0.0.1:{port}{BENCH_PATH}"
        for fmt, out in (("raw", raw), ("flamegraph", svg)):
            spy = env.procs.start(
                [*cmd, "-f", fmt, "-o", str(out)], log=out_dir / "py-spy.log", cpus=where.wrk
            )
            time.sleep(0.5)
            # wrk runs for the whole sampling window so every sample is under load.
            result = run_wrk(
                url, lua, env.args.connections, duration + 2, env.args.threads, where.wrk
            )
            spy.wait(duration + 30)
            env.procs.running.remove(spy)
            if fmt == "raw":
                if not raw.exists():
                    print(f"  py-spy produced nothing; see {out_dir / 'py-spy.log'}")
                    return
                print(
                    f"\n  {kind}, 1 worker: {result.rps:.0f} req/s while sampled "
                    f"(py-spy runs on wrk's core)"
                )
                summarise_profile(raw, rate, result.rps, duration)
        print(f"  flame graph: {svg}\n  collapsed stacks: {raw}")
    finally:
        env.procs.stop(proc)
        env.procs.stop(upstream)


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "handle (gateway/proxy/handler.py:81)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{name} ({file})" if file else name


def _area(frame: str) -> str:
    if "gateway/" in frame and "site-packages" not in frame:
        parts = frame.split("gateway/", 1)[1].split("/")
        return "gateway/" + parts[0] if len(parts) > 1 else "gateway"
    for lib in (
        "aiohttp",
        "multidict",
        "yarl",
        "uvloop",
        "prometheus_client",
        "asyncio",
        "redis",
        "json",
        "hmac",
        "logging",
    ):
        if f"/{lib}/" in frame or f"{lib}." in frame.split(" (")[0]:
            return lib
    return "other"


def summarise_profile(raw: Path, rate: int, rps: float, duration: float, top: int = 25) -> None:
    """Self and inclusive time per function: share of busy samples and CPU us per request."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = torn = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        # Only complete stacks of the event-loop thread: --nonblocking reads the stack while
        # it changes, so some are torn (no root frame); other threads (argon2 pool) idle.
        if not any(f.startswith("Runner.run ") for f in frames[:8]):
            torn += n
            continue
        total += n
        self_t[_frame_name(frames[-1])] += n
        areas[_area(frames[-1])] += n
        for name in {_frame_name(f) for f in frames}:
            incl[name] += n
    if not total:
        print("  (no samples)")
        return
    # Scale complete samples up to all samples of the loop thread (torn ones are a random
    # subset), then to microseconds per request.
    us = 1e6 / rate / (rps * duration) * (total + torn) / total

    def show(title: str, counter: collections.Counter[str], limit: int) -> None:
        print(f"  -- {title} --   share   us/req")
        for name, n in counter.most_common(limit):
            print(f"  {n / total:13.1%} {n * us:8.1f}  {name}")

    print(
        f"  py-spy: {total} complete + {torn} torn/other-thread samples at {rate} Hz; "
        f"event-loop thread busy {total * us:.0f} us per request"
    )
    show("self time (leaf frame; C calls count in their Python caller)", self_t, top)
    show("inclusive time", incl, top + 15)
    show("self time by area", areas, 20)


# ---------------------------------------------------------------------------- route table


@dataclass(frozen=True)
class _Route:
    path: str
    methods: frozenset[str] | None


def route_bench() -> list[tuple[str, float, float, float]]:
    """(label, walk with 5 routes, walk with 500 routes, memo hit with 500 routes), in us.

    The walk is what a (method, path) not seen recently costs (RouteTable._walk, the trie);
    a memo hit is what a repeated one costs (RouteTable.match answering from its memo).
    """
    from gateway.proxy.routes import RouteTable

    def table(n: int) -> RouteTable[_Route]:
        routes = [
            _Route(f"/api/v{i % 7}/svc{i}/{{id}}/items/**", frozenset({"GET", "POST"}))
            for i in range(n - 1)
        ]
        routes.append(_Route("/api/v1/target/{id}/**", None))
        return RouteTable.compile(routes)

    def best_of(call: Callable[[], object]) -> float:
        timer = timeit.Timer(call)
        loops, _ = timer.autorange()
        return min(timer.repeat(repeat=5, number=loops)) / loops * 1e6

    cases = [
        ("last route, /api/v1/target/42/a/b", "/api/v1/target/42/a/b"),
        ("no match, /nothing/here/at/all", "/nothing/here/at/all"),
        ("first route, /api/v0/svc0/7/items/x", "/api/v0/svc0/7/items/x"),
    ]
    small, large = table(5), table(500)
    assert len(small) == 5 and len(large) == 500
    out = []
    for label, path in cases:
        out.append(
            (
                label,
                best_of(lambda path=path: small._walk("GET", path)),
                best_of(lambda path=path: large._walk("GET", path)),
                best_of(lambda path=path: large.match("GET", path)),
            )
        )
    return out


# ---------------------------------------------------------------------------- report


def _med(values: list[float]) -> float:
    return statistics.median(values)


def report(scenarios: list[Scenario], args: argparse.Namespace) -> None:
    c, lc = args.connections, args.latency_connections
    print(
        f"\nwrk -t{args.threads} -d{args.duration:g}s, loopback; "
        f"median of {args.repeat} run(s); GET {BENCH_PATH}"
    )
    head = (
        f"| {'target':<44} | {'req/s @c' + str(c):>10} | {'p50 ms':>7} | {'p99 ms':>7} | "
        f"{'CPU us/req':>10} | {'req/s @c' + str(lc):>9} | {'p50 ms':>7} | {'p99 ms':>7} |"
    )
    print(head)
    print("|" + "|".join("-" * (len(p)) for p in head.split("|")[1:-1]) + "|")
    for sc in scenarios:
        t, lt = sc.throughput, sc.latency
        cpu = _med([r.cpu_us_per_req for r in t if r.cpu_us_per_req is not None] or [0])
        print(
            f"| {sc.label:<44} | {_med([r.rps for r in t]):>10.0f} | "
            f"{_med([r.p50_ms for r in t]):>7.2f} | {_med([r.p99_ms for r in t]):>7.2f} | "
            f"{cpu:>10.0f} | {_med([r.rps for r in lt]):>9.0f} | "
            f"{_med([r.p50_ms for r in lt]):>7.3f} | {_med([r.p99_ms for r in lt]):>7.3f} |"
        )
    by = {(s.kind, s.workers, s.access_log): s for s in scenarios}
    print(
        "\nKeygate vs plain proxy at equal worker count "
        "(targets: req/s ratio >= 0.85, added p50 < 1 ms):"
    )
    for (kind, workers, _log), sc in by.items():
        if not kind.startswith("keygate"):
            continue
        plain = by.get(("plain", workers, False))
        if plain is None:
            continue
        ratio = _med([r.rps for r in sc.throughput]) / _med([r.rps for r in plain.throughput])
        added = _med([r.p50_ms for r in sc.latency]) - _med([r.p50_ms for r in plain.latency])
        cpu_k = _med([r.cpu_us_per_req or 0 for r in sc.throughput])
        cpu_p = _med([r.cpu_us_per_req or 0 for r in plain.throughput])
        verdict = "OK" if ratio >= 0.85 and added < 1.0 else "BELOW TARGET"
        print(
            f"  {sc.label:<44}: "
            f"req/s ratio {ratio:.2f}, added p50 @c{lc} {added * 1000:+.0f} us, "
            f"CPU/req {cpu_k / cpu_p if cpu_p else 0:.2f}x plain  [{verdict}]"
        )
    report_tokens(by, lc)


def report_tokens(by: dict[tuple[str, int, bool], Scenario], lc: int) -> None:
    """Cached user token vs cached API key: same config, route and rounds (issue 13's
    target: the same requests/s within 5 %). Paired: each round's token run is divided by
    the same round's key run, which ran right before or after it."""
    pairs = [
        (sc, by[("keygate", workers, log)])
        for (kind, workers, log), sc in by.items()
        if kind == "keygate-token" and ("keygate", workers, log) in by
    ]
    if not pairs:
        return
    print("\nCached user token vs cached API key (target: req/s within 5 %):")
    for token, key in pairs:
        paired = [t.rps / k.rps for t, k in zip(token.throughput, key.throughput, strict=True)]
        cpu = [
            t.cpu_us_per_req / k.cpu_us_per_req
            for t, k in zip(token.throughput, key.throughput, strict=True)
            if t.cpu_us_per_req and k.cpu_us_per_req
        ]
        added = _med([r.p50_ms for r in token.latency]) - _med([r.p50_ms for r in key.latency])
        ratio = _med(paired)
        verdict = "OK" if ratio >= 0.95 else "SLOWER THAN 5 %"
        print(
            f"  {token.workers} worker(s), log {'on' if token.access_log else 'off'}: "
            f"token/key req/s, paired rounds: median {ratio:.3f} "
            f"(min {min(paired):.3f}, max {max(paired):.3f}, {len(paired)} rounds); "
            f"CPU/req {_med(cpu) if cpu else 0:.3f}x; p50 @c{lc} {added * 1000:+.0f} us  "
            f"[{verdict}]"
        )


# ---------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Keygate vs plain aiohttp proxy, driven by wrk.")
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--connections", type=int, default=32, help="wrk -c for throughput (32)")
    p.add_argument(
        "--latency-connections",
        type=int,
        default=4,
        help="wrk -c for the latency comparison at moderate load (4)",
    )
    p.add_argument("--threads", type=int, default=1, help="wrk -t (1: wrk shares 2 cores too)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of wrk warm-up per target")
    p.add_argument("--repeat", type=int, default=1, help="rounds over all targets; median shown")
    p.add_argument(
        "--access-log",
        choices=("off", "on", "both"),
        default="both",
        help="Keygate log.access_log setting(s) to measure (default both)",
    )
    p.add_argument("--upstream-workers", type=int, default=1)
    p.add_argument(
        "--workers",
        type=int,
        action="append",
        choices=(1, 2),
        help="proxy worker counts to measure (repeatable; default 1 and 2)",
    )
    p.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin 1-worker runs (default: proxy on CPU 1, wrk+upstream on 0)",
    )
    p.add_argument(
        "--compare-root",
        metavar="DIR",
        help="also measure the gateway package of another source tree (log off)",
    )
    p.add_argument("--profile", metavar="DIR", help="also py-spy Keygate 1 worker into DIR")
    p.add_argument(
        "--profile-target",
        choices=("keygate", "plain", "both", "keygate-token", "key-and-token"),
        default="keygate",
        help="keygate: cached API key; keygate-token: cached user token; both: plain and "
        "keygate; key-and-token: keygate and keygate-token",
    )
    p.add_argument(
        "--no-tokens", dest="tokens", action="store_false", help="skip the user-token targets"
    )
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument("--only-profile", action="store_true", help="skip the wrk table")
    p.add_argument("--skip-routes", action="store_true", help="skip the route-table timing")
    args = p.parse_args()
    args.workers = args.workers or [1, 2]
    return args


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"CPUs: {os.cpu_count()} (affinity {len(os.sched_getaffinity(0))}); "
        + (
            "1-worker runs: server under test on CPU 1, wrk + upstream on CPU 0; "
            "2-worker runs: all share both"
            if args.pin
            else "no pinning"
        ),
        flush=True,
    )
    if not args.skip_routes:
        print(
            "\nRoute table: best of 5 (timeit), microseconds per call; walk = a path not"
            " seen recently, memo = a repeated one"
        )
        print(
            f"| {'request':<40} | {'walk, 5 routes':>14} | {'walk, 500 routes':>16} |"
            f" {'memo, 500 routes':>16} |"
        )
        print(f"|{'-' * 42}|{'-' * 16}|{'-' * 18}|{'-' * 18}|")
        for label, five, five_hundred, memo in route_bench():
            print(f"| {label:<40} | {five:>14.2f} | {five_hundred:>16.2f} | {memo:>16.2f} |")
    tmp = Path(tempfile.mkdtemp(prefix="keygate-bench-"))
    procs = Procs()
    pg = EmbeddedPostgres(tmp / "pg")
    rd = EmbeddedRedis(tmp / "redis")
    issuer: LocalIssuer | None = None
    try:
        print(f"\nStarting PostgreSQL and Redis in {tmp} ...", flush=True)
        pg.start()
        rd.start()
        key = asyncio.run(create_key(pg.url, rd.url))
        lua = tmp / "auth.lua"
        lua.write_text(f'wrk.headers["Authorization"] = "Bearer {key}"\n')
        env = Env(tmp, procs, 0, pg.url, rd.url, key, lua, args)
        issuer = LocalIssuer()
        env.issuer, env.token = issuer, issuer.token()
        env.token_lua = tmp / "token.lua"
        env.token_lua.write_text(f'wrk.headers["Authorization"] = "Bearer {env.token}"\n')

        logs = {"off": [False], "on": [True], "both": [False, True]}[args.access_log]
        scenarios = [Scenario("direct upstream", "direct", 1)]
        for workers in args.workers:
            scenarios.append(Scenario(f"plain proxy, {workers} worker(s)", "plain", workers))
            for log in logs:
                scenarios.append(
                    Scenario(
                        f"keygate key, {workers} worker(s), log {'on' if log else 'off'}",
                        "keygate",
                        workers,
                        access_log=log,
                    )
                )
                if args.tokens:
                    scenarios.append(
                        Scenario(
                            f"keygate user token, {workers} worker(s), log "
                            f"{'on' if log else 'off'}",
                            "keygate-token",
                            workers,
                            access_log=log,
                        )
                    )
            if args.compare_root:
                scenarios.append(
                    Scenario(
                        f"keygate@{Path(args.compare_root).name}, {workers} worker(s), log off",
                        "keygate-other",
                        workers,
                        root=Path(args.compare_root).resolve(),
                    )
                )
        if not args.only_profile:
            for round_ in range(args.repeat):
                print(f"\nRound {round_ + 1}/{args.repeat}", flush=True)
                for sc in round_order(scenarios, round_):
                    measure(env, sc)
            report(scenarios, args)
        if args.profile:
            kinds = {
                "both": ["plain", "keygate"],
                "key-and-token": ["keygate", "keygate-token"],
            }.get(args.profile_target, [args.profile_target])
            for kind in kinds:
                print(f"\nProfiling {kind}, 1 worker (access log off), under the throughput load")
                profile(env, Path(args.profile).resolve(), args.native, kind)
    finally:
        procs.stop_all()
        if issuer is not None:
            issuer.close()
        rd.destroy()
        pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def round_order(scenarios: list[Scenario], round_: int) -> list[Scenario]:
    """The targets in measuring order: in odd rounds each user-token target runs before
    its API-key twin instead of after it, so slow drift of the machine does not favour
    either side of the token/key ratio."""
    order = list(scenarios)
    if round_ % 2:
        for i, sc in enumerate(order[:-1]):
            nxt = order[i + 1]
            if sc.kind == "keygate" and nxt.kind == "keygate-token" and sc.root == nxt.root:
                order[i], order[i + 1] = nxt, sc
    return order


if __name__ == "__main__":
    sys.exit(main())
