"""Keygate's check listener (SPEC §12) under load (issue 14, not a test).

    .venv/bin/python tests/perf/bench_check.py [--duration 5] [--rounds 3]

Starts, all on 127.0.0.1 and all stopped at the end: embedded PostgreSQL + Redis in a
temp dir (migrated; one org and one cached key made by bench_proxy.create_key, more keys
minted with cheap argon2 for the revocation probes), the fixed upstream
(tests/perf/fixed_upstream.py), `python -m gateway serve` with `listen.check` set, and
nginx (/usr/sbin/nginx, worker_processes 1). Two measurements, side by side in every
round, alternating their order from round to round:

1. Check vs proxy, one Keygate worker: wrk straight at `/nginx` on the check listener
   (X-Original-Method: GET, X-Original-URI: /api/v1/items/42, X-API-Key: the key) and at
   the proxy listener (GET /api/v1/items/42, same key, to the fixed upstream). Same
   Keygate process for both; Keygate alone on CPU 1, wrk and the upstream on CPU 0.
   Target: decisions/s >= 4x proxied requests/s. CPU per decision vs per proxied request.
   Also the floor: a second fixed upstream on CPU 1 (aiohttp's server doing no work), the
   most any aiohttp listener could answer there.
2. nginx in front of the fixed upstream: deploy/nginx/keygate.conf as shipped (addresses
   rendered, as tests/support/edge_proxies.py does) asking Keygate's /nginx with 1 and
   with 2 workers, vs the same nginx with the keys in a `map` (no external check).
   Nothing pinned (nginx, Keygate, upstream and wrk share both cores). Target: >= 0.3x.
   `--keepalive N` (repeatable) sets both upstream blocks' keepalive (shipped: 16).
   CPU per request of each process (from /proc), and p50 at 4 connections for the extra
   subrequest round trip. During each nginx+Keygate throughput run a second, cached key
   is revoked through KeyService and polled through nginx until refused (<= 1 s).

--profile DIR also records Keygate (1 worker) answering /nginx under load with py-spy.
See tests/perf/README.md for the method and the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_proxy import (  # noqa: E402  (bench_proxy puts the repository on sys.path)
    PYTHON,
    SECRET,
    Env,
    Procs,
    WrkResult,
    cpu_seconds,
    create_key,
    get_ok,
    keygate_config,
    run_wrk,
    start_upstream,
    summarise_profile,
    wait_http,
)

from gateway.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402
from tests.support.edge_proxies import DEPLOY, render  # noqa: E402

ITEM = "/api/v1/items/42"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SHIPPED_NGINX = DEPLOY / "nginx" / "keygate.conf"
CHEAP_ARGON2 = "keys: {argon2: {time_cost: 1, memory_kib: 1024, parallelism: 1}}\n"


# ---------------------------------------------------------------------------- processes


@dataclass
class Run:
    """What lives for the whole run."""

    tmp: Path
    procs: Procs
    env: Env  # bench_proxy's, for start_upstream
    pg_url: str
    redis_url: str
    key: str
    args: argparse.Namespace
    serial: int = 0

    def name(self, what: str) -> str:
        self.serial += 1
        return f"{what}-{self.serial}"


@dataclass
class Keygate:
    proc: subprocess.Popen[bytes]
    proxy: int
    check: int
    workers: int


def gateway_config(run: Run, path: Path, proxy: int, admin: int, check: int, upstream: int) -> None:
    """bench_proxy's config (its routes, access log off) plus `listen.check` and cheap
    argon2 for the keys this script mints."""
    keygate_config(path, proxy, admin, upstream, False, run.pg_url, run.redis_url)
    text = path.read_text()
    admin_entry = f'admin: "127.0.0.1:{admin}"}}'
    assert admin_entry in text, "bench_proxy.keygate_config changed its listen: line"
    text = text.replace(admin_entry, f'admin: "127.0.0.1:{admin}", check: "127.0.0.1:{check}"}}')
    path.write_text(text + CHEAP_ARGON2)


def start_keygate(run: Run, workers: int, cpus: str | None) -> Keygate:
    proxy, admin, check = free_port(), free_port(), free_port()
    while len({proxy, admin, check}) < 3:
        admin, check = free_port(), free_port()
    name = run.name(f"keygate-{workers}w")
    cfg = run.tmp / f"{name}.yaml"
    gateway_config(run, cfg, proxy, admin, check, run.env.upstream_port)
    proc = run.procs.start(
        [PYTHON, "-m", "gateway", "serve", "--config", str(cfg), "--workers", str(workers)],
        env={
            **os.environ,
            "KEYGATE_SECRET": SECRET,
            "KEYGATE_CONFIG": str(cfg),
            "KEYGATE_DATABASE_URL": run.pg_url,
            "KEYGATE_REDIS_URL": run.redis_url,
        },
        log=run.tmp / f"{name}.log",
        cpus=cpus,
    )
    wait_http(f"http://127.0.0.1:{admin}/readyz", 30, proc=proc)
    return Keygate(proc, proxy, check, workers)


def check_headers(key: str) -> dict[str, str]:
    return {"X-Original-Method": "GET", "X-Original-URI": ITEM, "X-API-Key": key}


def warm_keygate(kg: Keygate, key: str) -> None:
    """The key into every worker's cache: fresh connections spread over the workers."""
    for _ in range(20 * kg.workers):
        get_ok(f"http://127.0.0.1:{kg.check}/nginx", check_headers(key))


def nginx_conf(work: Path, site: str) -> Path:
    """A minimal nginx.conf around `site` (in its http {} context), as
    tests/support/edge_proxies.running_nginx writes it, without the access log."""
    (work / "site.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = work / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {work}/nginx.pid;\n"
        f"error_log {work}/error.log warn;\nevents {{ worker_connections 4096; }}\n"
        "http {\n"
        "  access_log off;\n"
        f"  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;\n"
        f"  fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi;\n"
        f"  scgi_temp_path {work}/scgi;\n"
        f"  include {work}/site.conf;\n"
        "}\n"
    )
    return conf


def start_nginx(run: Run, site: str, what: str) -> tuple[subprocess.Popen[bytes], int]:
    """nginx (master + 1 worker) with `site`, whose listen is `__PORT__`."""
    work = run.tmp / run.name(f"nginx-{what}")
    work.mkdir()
    port = free_port()
    conf = nginx_conf(work, site.replace("__PORT__", str(port)))
    proc = run.procs.start([NGINX, "-p", str(work), "-c", str(conf)], log=work / "nginx.out")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {(work / 'nginx.out').read_text()[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not open port {port}")


def auth_site(check: int, upstream: int, keepalive: int) -> str:
    """deploy/nginx/keygate.conf, only its addresses (and keepalive, if asked) changed."""
    addresses = {
        "127.0.0.1:8082": f"127.0.0.1:{check}",
        "127.0.0.1:9000": f"127.0.0.1:{upstream}",
        "listen 8080;": "listen 127.0.0.1:__PORT__;",
    }
    if keepalive != 16:
        addresses["keepalive 16;"] = f"keepalive {keepalive};"
    return render(SHIPPED_NGINX, addresses)


def map_site(key: str, upstream: int, keepalive: int, dummies: int) -> str:
    """The same nginx with the keys in a `map`: unknown -> 401, the identity from the map
    through proxy_set_header; the other upstream headers as in the shipped config."""
    key_id = key.rsplit("_", 1)[0]
    fake = [f"kg_live_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}" for _ in range(dummies)]
    orgs = "".join(f'    "{k}" org{i % 50};\n' for i, k in enumerate(fake))
    ids = "".join(f'    "{k}" "{k.rsplit("_", 1)[0]}";\n' for k in fake)
    return f"""\
map_hash_bucket_size 256;
map_hash_max_size 65536;
upstream api {{
    server 127.0.0.1:{upstream};
    keepalive {keepalive};
}}
map $http_x_api_key $bench_org {{
    default "";
    "{key}" bench;
{orgs}}}
map $http_x_api_key $bench_key_id {{
    default "";
    "{key}" "{key_id}";
{ids}}}
server {{
    listen 127.0.0.1:__PORT__;
    underscores_in_headers off;
    ignore_invalid_headers on;
    add_header X-Request-Id $request_id always;
    location / {{
        default_type application/json;
        if ($bench_org = "") {{
            add_header WWW-Authenticate 'Bearer realm="keygate"' always;
            add_header X-Request-Id $request_id always;
            return 401 '{{"error": {{"code": "unauthenticated"}}}}';
        }}
        proxy_set_header X-Keygate-Credential key;
        proxy_set_header X-Keygate-Org $bench_org;
        proxy_set_header X-Keygate-Key-Id $bench_key_id;
        proxy_set_header X-Keygate-Scopes read;
        proxy_set_header X-Keygate-Env live;
        proxy_set_header X-Request-Id $request_id;
        proxy_set_header Authorization "";
        proxy_set_header X-API-Key "";
        proxy_set_header Host $proxy_host;
        proxy_set_header X-Forwarded-Host $host;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header Forwarded "";
        proxy_set_header Connection "";
        proxy_http_version 1.1;
        proxy_hide_header X-Request-Id;
        proxy_pass http://api;
    }}
}}
"""


# ---------------------------------------------------------------------------- revocation


class Revoker:
    """KeyService in this process (its own pool, changes published to the gateways, as
    the CLI's), on an event loop kept for the whole run."""

    def __init__(self, run: Run) -> None:
        from gateway.config import load_config
        from gateway.keys.models import Actor
        from gateway.keys.service import open_key_service

        cfg = run.tmp / "revoker.yaml"
        gateway_config(run, cfg, free_port(), free_port(), free_port(), free_port())
        env = {
            "KEYGATE_SECRET": SECRET,
            "KEYGATE_DATABASE_URL": run.pg_url,
            "KEYGATE_REDIS_URL": run.redis_url,
        }
        self.actor = Actor(principal="bench")
        self.runner = asyncio.Runner()
        self.stack = contextlib.AsyncExitStack()
        config = load_config(str(cfg), env)
        self.service = self.runner.run(self.stack.enter_async_context(open_key_service(config)))

    def create(self) -> tuple[str, str]:
        created = self.runner.run(
            self.service.create_key(self.actor, "bench", "revoked under load", ["read"])
        )
        return created.secret, created.key.id

    def revoke(self, key_id: str) -> None:
        self.runner.run(self.service.revoke_key(self.actor, key_id, reason="bench"))

    def close(self) -> None:
        self.runner.run(self.stack.aclose())
        self.runner.close()


def status_of(url: str, key: str) -> int:
    """One request on a fresh connection; its status."""
    request = urllib.request.Request(url, headers={"X-API-Key": key, "Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


@dataclass
class Revocation:
    revoke_call_s: float  # KeyService.revoke_key: transaction, Redis tombstone, publish
    refused_after_s: float  # revoke start -> start of the first round of the final
    # all-401 streak (every later round refused too; the poll ends after 3 such rounds)
    last_accepted_after_s: float | None  # revoke start -> start of the last round with a 200


def revoke_under_load(url: str, key: str, key_id: str, revoker: Revoker) -> Revocation:
    """Revoke `key` while a thread polls through nginx (rounds of 2 requests on fresh
    connections) until 3 rounds in a row are all refused."""
    before = [status_of(url, key) for _ in range(4)]
    if before != [200] * 4:
        raise RuntimeError(f"the key to revoke was not accepted before revoking: {before}")
    rounds: list[tuple[float, list[int]]] = []
    revoked = threading.Event()

    def poll() -> None:
        deadline, streak = time.perf_counter() + 10, 0
        while time.perf_counter() < deadline and streak < 3:
            at = time.perf_counter()
            codes = [status_of(url, key) for _ in range(2)]
            rounds.append((at, codes))
            streak = streak + 1 if revoked.is_set() and codes == [401, 401] else 0

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.01)
    started = time.perf_counter()
    try:
        revoker.revoke(key_id)
    finally:
        call = time.perf_counter() - started
        revoked.set()
        poller.join()
    if any(set(codes) - {200, 401} for _, codes in rounds):
        raise RuntimeError(f"unexpected status while polling: {rounds}")
    if len(rounds) < 3 or [c for _, c in rounds[-3:]] != [[401, 401]] * 3:
        raise RuntimeError("a revoked key was still accepted 10 s later")
    # Refused from the round after the last one that saw a 200 on.
    accepted = [i for i, (_, codes) in enumerate(rounds) if 200 in codes]
    first = rounds[accepted[-1] + 1 if accepted else 0][0]
    oks = [rounds[i][0] for i in accepted if rounds[i][0] >= started]
    return Revocation(call, max(first - started, 0.0), max(oks) - started if oks else None)


# ---------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    wrk: WrkResult
    cpu_us: dict[str, float]  # CPU microseconds per request, per process (tree)


@dataclass
class Target:
    label: str
    workers: int = 1
    throughput: list[Sample] = field(default_factory=list)
    latency: list[Sample] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def drive(
    url: str,
    lua: Path,
    connections: int,
    args: argparse.Namespace,
    pids: dict[str, int],
    wrk_cpus: str | None = None,
    during: Callable[[], None] | None = None,
) -> Sample:
    """One wrk run; CPU per request of each named process tree (and of wrk itself, from
    this process's reaped children). `during` runs in this thread while wrk runs."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    children, t0 = _children_cpu(), time.monotonic()
    if during is None:
        result = run_wrk(url, lua, connections, args.duration, args.threads, wrk_cpus)
    else:
        box: list[WrkResult] = []
        thread = threading.Thread(
            target=lambda: box.append(
                run_wrk(url, lua, connections, args.duration, args.threads, wrk_cpus)
            )
        )
        thread.start()
        try:
            during()
        finally:
            thread.join()
        if not box:
            raise RuntimeError("wrk failed")
        result = box[0]
    elapsed = time.monotonic() - t0
    requests = result.rps * elapsed
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    cpu["wrk"] = _children_cpu() - children
    if result.non_2xx or result.errors:
        print(f"  !! {url}: {result.non_2xx} non-2xx, {result.errors} socket errors", flush=True)
    return Sample(result, {k: v / requests * 1e6 if requests else 0.0 for k, v in cpu.items()})


def lua_file(run: Run, name: str, headers: dict[str, str]) -> Path:
    path = run.tmp / name
    path.write_text("".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items()))
    return path


def part1_round(run: Run, targets: dict[str, Target], round_: int, workers: int) -> None:
    """Check vs proxy in one Keygate; 1 worker: Keygate on CPU 1, wrk + upstream on 0.
    With 1 worker also the floor: a second fixed upstream (aiohttp's low-level server on
    uvloop, no work per request) on Keygate's CPU, what any aiohttp listener could reach."""
    pin = run.args.pin and workers == 1 and (os.cpu_count() or 1) >= 2
    upstream = start_upstream(run.env, "0" if pin else None)
    kg, floor = None, None
    try:
        kg = start_keygate(run, workers, "1" if pin else None)
        wrk_cpus = "0" if pin else None
        check_lua = lua_file(run, "check.lua", check_headers(run.key))
        key_lua = lua_file(run, "key.lua", {"X-API-Key": run.key})
        check_url = f"http://127.0.0.1:{kg.check}/nginx"
        proxy_url = f"http://127.0.0.1:{kg.proxy}{ITEM}"
        warm_keygate(kg, run.key)
        for _ in range(20 * workers):
            get_ok(proxy_url, {"X-API-Key": run.key})
        order = [
            ("check", check_url, check_lua, kg.proc.pid),
            ("proxy", proxy_url, key_lua, kg.proc.pid),
        ]
        if workers == 1 and f"floor-{workers}" in targets:
            upstream_port = run.env.upstream_port
            floor = start_upstream(run.env, "1" if pin else None)
            floor_url = f"http://127.0.0.1:{run.env.upstream_port}{ITEM}"
            run.env.upstream_port = upstream_port
            order.insert(1, ("floor", floor_url, key_lua, floor.pid))
        order = order[round_ % len(order) :] + order[: round_ % len(order)]
        for _, url, lua, _pid in order:
            run_wrk(url, lua, run.args.connections, run.args.warmup, run.args.threads, wrk_cpus)
        for what, url, lua, pid in order:
            target = targets[f"{what}-{workers}"]
            pids = {"server": pid, "upstream": upstream.pid}
            for conns, into in (
                (run.args.connections, target.throughput),
                (run.args.latency_connections, target.latency),
            ):
                into.append(drive(url, lua, conns, run.args, pids, wrk_cpus))
            cpu = target.throughput[-1].cpu_us
            print(
                f"  {target.label:<52} {target.throughput[-1].wrk.rps:>8.0f} req/s  "
                f"CPU us/req {', '.join(f'{k} {v:.0f}' for k, v in cpu.items())}  "
                f"p50@c{run.args.latency_connections} {target.latency[-1].wrk.p50_ms:.3f} ms",
                flush=True,
            )
    finally:
        for proc in (floor, kg.proc if kg else None):
            if proc is not None:
                run.procs.stop(proc)
        run.procs.stop(upstream)


def part2_target(run: Run, target: Target, kind: str, revoker: Revoker | None) -> None:
    """kind: "map@<keepalive>" or "auth-<workers>@<keepalive>". Nothing pinned."""
    kind, _, keepalive_text = kind.partition("@")
    keepalive = int(keepalive_text)
    upstream = start_upstream(run.env, None)
    kg, nginx = None, None
    try:
        pids = {}
        revoke_key: tuple[str, str] | None = None
        if kind == "map":
            site = map_site(run.key, run.env.upstream_port, keepalive, run.args.map_keys)
        else:
            kg = start_keygate(run, int(kind.split("-")[1]), None)
            site = auth_site(kg.check, run.env.upstream_port, keepalive)
            warm_keygate(kg, run.key)
            if revoker is not None:
                revoke_key = revoker.create()
                warm_keygate(kg, revoke_key[0])
        nginx, port = start_nginx(run, site, kind)
        url = f"http://127.0.0.1:{port}{ITEM}"
        lua = lua_file(run, "key.lua", {"X-API-Key": run.key})
        get_ok(url, {"X-API-Key": run.key})
        if status_of(url, "kg_live_unknown_" + "x" * 30) != 401:
            raise RuntimeError(f"{kind}: an unknown key was not refused")
        run_wrk(url, lua, run.args.connections, run.args.warmup, run.args.threads)
        pids = {"nginx": nginx.pid, "upstream": upstream.pid}
        if kg is not None:
            pids["keygate"] = kg.proc.pid

        during: Callable[[], None] | None = None
        if revoke_key is not None:
            assert revoker is not None
            secret, key_id, rev = revoke_key[0], revoke_key[1], revoker

            def revoke_midway() -> None:
                time.sleep(run.args.duration * 0.4)
                target.revocations.append(revoke_under_load(url, secret, key_id, rev))

            during = revoke_midway
        target.throughput.append(
            drive(url, lua, run.args.connections, run.args, pids, None, during)
        )
        target.latency.append(drive(url, lua, run.args.latency_connections, run.args, pids))
        t = target.throughput[-1]
        extra = ""
        if target.revocations and revoke_key is not None:
            extra = f"  revoked -> 401 in {target.revocations[-1].refused_after_s * 1000:.1f} ms"
        print(
            f"  {target.label:<52} {t.wrk.rps:>8.0f} req/s  "
            f"CPU us/req {sum(t.cpu_us.values()):.0f} "
            f"({', '.join(f'{k} {v:.0f}' for k, v in t.cpu_us.items())})  "
            f"p50@c{run.args.latency_connections} {target.latency[-1].wrk.p50_ms:.3f} ms{extra}",
            flush=True,
        )
    finally:
        if nginx is not None:
            run.procs.stop(nginx)
        if kg is not None:
            run.procs.stop(kg.proc)
        run.procs.stop(upstream)


def profile_check(run: Run, out_dir: Path) -> None:
    """py-spy record of Keygate (1 worker, pinned as in part 1) answering /nginx under the
    throughput load; prints where the time goes (bench_proxy.summarise_profile)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pin = run.args.pin and (os.cpu_count() or 1) >= 2
    upstream = start_upstream(run.env, "0" if pin else None)
    kg = start_keygate(run, 1, "1" if pin else None)
    wrk_cpus = "0" if pin else None
    try:
        warm_keygate(kg, run.key)
        lua = lua_file(run, "check.lua", check_headers(run.key))
        url = f"http://127.0.0.1:{kg.check}/nginx"
        run_wrk(url, lua, run.args.connections, run.args.warmup, run.args.threads, wrk_cpus)
        rate, duration = 250, max(5, int(run.args.duration))
        raw, svg = out_dir / "check-1w.collapsed", out_dir / "check-1w.svg"
        spy_bin = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
        for fmt, out in (("raw", raw), ("flamegraph", svg)):
            cmd = [spy_bin, "record", "-p", str(kg.proc.pid), "-d", str(duration)]
            cmd += ["-r", str(rate), "--nonblocking", "-f", fmt, "-o", str(out)]
            spy = run.procs.start(cmd, log=out_dir / "py-spy.log", cpus=wrk_cpus)
            time.sleep(0.5)
            result = run_wrk(
                url, lua, run.args.connections, duration + 2, run.args.threads, wrk_cpus
            )
            spy.wait(duration + 30)
            run.procs.running.remove(spy)
            if fmt == "raw":
                if not raw.exists():
                    print(f"  py-spy produced nothing; see {out_dir / 'py-spy.log'}")
                    return
                print(f"\n  /nginx check, 1 worker: {result.rps:.0f} decisions/s while sampled")
                summarise_profile(raw, rate, result.rps, duration)
        print(f"  flame graph: {svg}\n  collapsed stacks: {raw}")
    finally:
        run.procs.stop(kg.proc)
        run.procs.stop(upstream)


# ---------------------------------------------------------------------------- report


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _paired(a: list[Sample], b: list[Sample]) -> list[float]:
    return [x.wrk.rps / y.wrk.rps for x, y in zip(a, b, strict=True) if y.wrk.rps]


def report(part1: dict[str, Target], part2: dict[str, Target], args: argparse.Namespace) -> None:
    c, lc = args.connections, args.latency_connections
    print(
        f"\nwrk -t{args.threads} -d{args.duration:g}s, medians of {args.rounds} round(s); "
        f"GET {ITEM} with X-API-Key (a cached key)"
    )
    if part1:
        print("\n### 1. Keygate /nginx check vs Keygate proxy (same process)\n")
        print(
            f"| target | req/s @c{c} | req/s per worker | p50 ms | p99 ms | server CPU us/req "
            f"| upstream CPU us/req | req/s @c{lc} | p50 ms @c{lc} |"
        )
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for t in part1.values():
            w = t.workers
            rps = _med([s.wrk.rps for s in t.throughput])
            print(
                f"| {t.label} | {rps:.0f} | {rps / w:.0f} | "
                f"{_med([s.wrk.p50_ms for s in t.throughput]):.2f} | "
                f"{_med([s.wrk.p99_ms for s in t.throughput]):.2f} | "
                f"{_med([s.cpu_us['server'] for s in t.throughput]):.0f} | "
                f"{_med([s.cpu_us['upstream'] for s in t.throughput]):.0f} | "
                f"{_med([s.wrk.rps for s in t.latency]):.0f} | "
                f"{_med([s.wrk.p50_ms for s in t.latency]):.3f} |"
            )
        for workers in args.check_workers:
            check, proxy = part1[f"check-{workers}"], part1[f"proxy-{workers}"]
            ratios = _paired(check.throughput, proxy.throughput)
            cpu = [
                p.cpu_us["server"] / ch.cpu_us["server"]
                for ch, p in zip(check.throughput, proxy.throughput, strict=True)
                if ch.cpu_us["server"]
            ]
            verdict = "MET" if _med(ratios) >= 4 else "NOT MET"
            print(
                f"\n{workers} worker(s): decisions/s / proxied req/s, paired rounds: median "
                f"{_med(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f}); "
                f"Keygate CPU per proxied request / per decision: {_med(cpu):.2f}x  "
                f"[target >= 4x: {verdict}]"
            )
            floor = part1.get(f"floor-{workers}")
            if floor is not None:
                ceiling = _paired(floor.throughput, proxy.throughput)
                share = _paired(check.throughput, floor.throughput)
                print(
                    f"  floor (no-op aiohttp server on the same core) / proxy: median "
                    f"{_med(ceiling):.2f}x (min {min(ceiling):.2f}, max {max(ceiling):.2f}); "
                    f"check / floor: {_med(share):.2f}x; CPU us/req: floor "
                    f"{_med([x.cpu_us['server'] for x in floor.throughput]):.0f}, check "
                    f"{_med([x.cpu_us['server'] for x in check.throughput]):.0f}, proxy "
                    f"{_med([x.cpu_us['server'] for x in proxy.throughput]):.0f}"
                )
    if part2:
        print("\n### 2. nginx (worker_processes 1) in front of the fixed upstream\n")
        print(
            f"| target | req/s @c{c} | p50 ms | p99 ms | CPU us/req: nginx | Keygate | "
            f"upstream | wrk | all | req/s @c{lc} | p50 ms @c{lc} |"
        )
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for t in part2.values():

            def cpu(name: str, t: Target = t) -> str:
                values = [s.cpu_us[name] for s in t.throughput if name in s.cpu_us]
                return f"{_med(values):.0f}" if values else "-"

            print(
                f"| {t.label} | {_med([s.wrk.rps for s in t.throughput]):.0f} | "
                f"{_med([s.wrk.p50_ms for s in t.throughput]):.2f} | "
                f"{_med([s.wrk.p99_ms for s in t.throughput]):.2f} | "
                f"{cpu('nginx')} | {cpu('keygate')} | {cpu('upstream')} | {cpu('wrk')} | "
                f"{_med([sum(s.cpu_us.values()) for s in t.throughput]):.0f} | "
                f"{_med([s.wrk.rps for s in t.latency]):.0f} | "
                f"{_med([s.wrk.p50_ms for s in t.latency]):.3f} |"
            )
        for keepalive in args.keepalive:
            base = part2[f"map@{keepalive}"]
            for workers in args.nginx_workers:
                report_auth(part2[f"auth-{workers}@{keepalive}"], base, lc)
        revs = [r for t in part2.values() for r in t.revocations]
        if revs:
            delays = [r.refused_after_s * 1000 for r in revs]
            calls = [r.revoke_call_s * 1000 for r in revs]
            late = [r.last_accepted_after_s for r in revs if r.last_accepted_after_s]
            print(
                f"\nRevocation under load, all nginx+Keygate runs ({len(revs)}): revoke call "
                f"median {_med(calls):.1f} ms (max {max(calls):.1f}); refused through nginx "
                f"median {_med(delays):.1f} ms, max {max(delays):.1f} ms after the revoke "
                f"started [<= 1 s: {'MET' if max(delays) <= 1000 else 'NOT MET'}]"
                + (
                    f"; last 200 seen {max(late) * 1000:.1f} ms after"
                    if late
                    else "; no 200 seen after the revoke call"
                )
            )


def report_auth(auth: Target, base: Target, lc: int) -> None:
    ratios = _paired(auth.throughput, base.throughput)
    added = _med([s.wrk.p50_ms for s in auth.latency]) - _med([s.wrk.p50_ms for s in base.latency])

    def cpu(t: Target, name: str) -> float:
        return _med([s.cpu_us[name] for s in t.throughput])

    cpu_all = [
        sum(b.cpu_us.values()) / sum(a.cpu_us.values())
        for a, b in zip(auth.throughput, base.throughput, strict=True)
    ]
    verdict = "MET" if _med(ratios) >= 0.3 else "NOT MET"
    print(
        f"\n{auth.label} / map: req/s paired rounds median {_med(ratios):.2f}x "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f}) [target >= 0.3x: {verdict}]; "
        f"all-process CPU/req map / auth {_med(cpu_all):.2f}x; added p50 @c{lc} "
        f"{added * 1000:+.0f} us; extra CPU per request: Keygate {cpu(auth, 'keygate'):.0f} us, "
        f"nginx {cpu(auth, 'nginx') - cpu(base, 'nginx'):+.0f} us (the subrequest), upstream "
        f"{cpu(auth, 'upstream') - cpu(base, 'upstream'):+.0f} us, wrk "
        f"{cpu(auth, 'wrk') - cpu(base, 'wrk'):+.0f} us"
    )
    for r in auth.revocations:
        print(
            f"  revoked: call {r.revoke_call_s * 1000:.1f} ms, refused through nginx "
            f"{r.refused_after_s * 1000:.1f} ms after the revoke started"
        )


# ---------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=5, help="seconds per wrk run (5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians shown (3)")
    p.add_argument("--connections", type=int, default=32, help="wrk -c for throughput (32)")
    p.add_argument("--latency-connections", type=int, default=4, help="wrk -c, latency (4)")
    p.add_argument("--threads", type=int, default=1, help="wrk -t (1)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of wrk warm-up (2)")
    p.add_argument("--upstream-workers", type=int, default=1, help="fixed upstream workers")
    p.add_argument(
        "--check-workers",
        type=int,
        action="append",
        choices=(1, 2),
        help="Keygate workers for part 1 (repeatable; default 1)",
    )
    p.add_argument(
        "--nginx-workers",
        type=int,
        action="append",
        choices=(1, 2),
        help="Keygate workers behind nginx in part 2 (repeatable; default 1 and 2)",
    )
    p.add_argument(
        "--keepalive",
        type=int,
        action="append",
        help="nginx `keepalive` of both upstream blocks (repeatable; default 16, as shipped)",
    )
    p.add_argument("--map-keys", type=int, default=1000, help="other keys in the nginx map")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="part 1: do not pin")
    p.add_argument("--skip-part1", action="store_true")
    p.add_argument("--skip-part2", action="store_true")
    p.add_argument("--no-revoke", dest="revoke", action="store_false")
    p.add_argument("--profile", metavar="DIR", help="also py-spy the /nginx check into DIR")
    args = p.parse_args()
    args.check_workers = args.check_workers or [1]
    args.nginx_workers = args.nginx_workers or [1, 2]
    args.keepalive = args.keepalive or [16]
    return args


def main() -> int:
    args = parse_args()
    for binary in ("wrk", NGINX):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} not found: apt-get install -y wrk nginx")

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    print(f"CPUs: {os.cpu_count()}; load average {os.getloadavg()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="keygate-bench-check-"))
    procs = Procs()
    pg, rd = EmbeddedPostgres(tmp / "pg"), EmbeddedRedis(tmp / "redis")
    revoker: Revoker | None = None
    try:
        pg.start()
        rd.start()
        key = asyncio.run(create_key(pg.url, rd.url))
        env = Env(tmp, procs, 0, pg.url, rd.url, key, tmp / "unused.lua", args)
        run = Run(tmp, procs, env, pg.url, rd.url, key, args)
        if args.revoke and not args.skip_part2:
            revoker = Revoker(run)
        part1 = {
            f"{what}-{w}": Target(label.format(w=w), w)
            for w in args.check_workers
            for what, label in (
                ("check", "Keygate /nginx check, {w} worker(s)"),
                ("floor", "floor: fixed upstream (aiohttp, no work), 1 process"),
                ("proxy", "Keygate proxy, {w} worker(s)"),
            )
            if what != "floor" or w == 1
        }
        groups = [
            [f"map@{k}"] + [f"auth-{w}@{k}" for w in args.nginx_workers] for k in args.keepalive
        ]
        part2 = {
            kind: Target(
                f"nginx + map (no check), keepalive {kind.partition('@')[2]}"
                if kind.startswith("map")
                else f"nginx + auth_request -> Keygate, {kind[5]} worker(s), "
                f"keepalive {kind.partition('@')[2]}",
                1 if kind.startswith("map") else int(kind[5]),
            )
            for group in groups
            for kind in group
        }
        for round_ in range(args.rounds):
            print(f"\nRound {round_ + 1}/{args.rounds}", flush=True)
            if not args.skip_part1:
                for w in args.check_workers:
                    part1_round(run, part1, round_, w)
            if not args.skip_part2:
                for group in groups[:: -1 if round_ % 2 else 1]:
                    shift = round_ % len(group)
                    for kind in group[shift:] + group[:shift]:
                        part2_target(run, part2[kind], kind, revoker)
        if args.rounds:
            report({} if args.skip_part1 else part1, {} if args.skip_part2 else part2, args)
        if args.profile:
            print("\nProfiling Keygate's /nginx check, 1 worker, under the throughput load")
            profile_check(run, Path(args.profile).resolve())
    finally:
        procs.stop_all()
        if revoker is not None:
            revoker.close()
        rd.destroy()
        pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
