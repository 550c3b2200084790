"""Instructions per proxied request, counted by valgrind's callgrind (not a test).

    .venv/bin/python tests/perf/count_instructions.py [--requests 2000] [--compare-root DIR]

Requests/s on a shared 2-core machine move by ±30 % between runs; instruction counts do
not (the same build and inputs give the same count to within ~0.5 %), so this is the figure
to compare a change against. It does not see time spent in the kernel or waiting on caches
and memory, and crypto may take other code paths than on the real CPU: read it next to
bench_proxy.py's requests/s, not instead of them.

Starts embedded PostgreSQL + Redis, one key, the fixed upstream (tests/perf/
fixed_upstream.py, not under valgrind) and, in turn, each server under callgrind with
instrumentation off: the plain aiohttp proxy, Keygate on a public route and Keygate on an
authenticated route with a cached key, with its access log off and on (to /dev/null), and
with a cached user token (bench_proxy.LocalIssuer; every Keygate target trusts that
issuer, so the key and token targets run the same config).
Each is warmed up (400 requests), then counted over --requests sequential keep-alive
requests (instrumentation switched on and off around them with callgrind_control), then
stopped. Needs valgrind (Debian package).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_proxy  # noqa: E402
from bench_proxy import (  # noqa: E402
    PYTHON,
    ROOT,
    SECRET,
    LocalIssuer,
    Procs,
    create_key,
    keygate_config,
)

from gateway.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402

AUTH_PATH = bench_proxy.BENCH_PATH
PUBLIC_PATH = "/health"


@dataclass
class Target:
    label: str
    kind: str  # "plain" or "keygate"
    path: str
    root: Path = ROOT
    access_log: bool = False
    token: bool = False  # call with the user token instead of the API key


async def _connection(port: int, request: bytes, count: int, statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length = None
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length is None:
                raise RuntimeError("response without Content-Length")
            await reader.readexactly(length)
            statuses.append(status)
    finally:
        writer.close()


def drive(port: int, path: str, key: str, count: int) -> None:
    """`count` GETs on one keep-alive connection, one at a time; all must be 200."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n\r\n"
    ).encode()
    statuses: list[int] = []
    asyncio.run(asyncio.wait_for(_connection(port, request, count, statuses), 600))
    bad = [s for s in statuses if s != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} of {count} responses were not 200: {bad[:5]}")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(pid)], check=True, stdout=subprocess.DEVNULL, timeout=120
    )


def total_instructions(out_file: Path) -> int:
    for line in reversed(out_file.read_text().splitlines()):
        if line.startswith("totals:"):  # the header's "summary:" stays 0 when toggled
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


def count(
    target: Target,
    tmp: Path,
    procs: Procs,
    upstream_port: int,
    pg_url: str,
    redis_url: str,
    key: str,
    requests: int,
    user_tokens: str = "",
) -> float:
    port = free_port()
    out = tmp / f"callgrind-{target.label.replace(' ', '_')}.%p.out"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "PYTHONPATH": str(target.root)}
    if target.kind == "plain":
        args = [
            PYTHON,
            str(HERE / "plain_proxy.py"),
            "--port",
            str(port),
            "--upstream",
            f"http://127.0.0.1:{upstream_port}",
        ]
        ready = f"http://127.0.0.1:{port}{PUBLIC_PATH}"
    else:
        admin = free_port()
        cfg = tmp / f"keygate-{port}.yaml"
        # Older trees (--compare-root) may not know `user_tokens:`: only when a token is sent.
        tokens = user_tokens if target.root == ROOT or target.token else ""
        keygate_config(
            cfg, port, admin, upstream_port, target.access_log, pg_url, redis_url, tokens
        )
        args = [PYTHON, "-m", "gateway", "serve", "--config", str(cfg)]
        env["KEYGATE_SECRET"] = SECRET
        ready = f"http://127.0.0.1:{admin}/readyz"
    proc = procs.start([*valgrind, *args], env=env, log=tmp / f"{port}.log", cwd=target.root)
    try:
        wait_ready(ready, proc, 300)
        drive(port, target.path, key, 400)
        callgrind(proc.pid, "--instr=on")
        drive(port, target.path, key, requests)
        callgrind(proc.pid, "--instr=off")
        callgrind(proc.pid, "--dump=measured")
        dumps = sorted(tmp.glob(f"callgrind-{target.label.replace(' ', '_')}.{proc.pid}.out.*"))
        if not dumps:
            raise RuntimeError(f"callgrind wrote no dump for {target.label}")
        return total_instructions(dumps[-1]) / requests
    finally:
        procs.stop(proc, timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--compare-root",
        action="append",
        default=[],
        metavar="DIR",
        help="also count the gateway package of this tree (repeatable)",
    )
    parser.add_argument(
        "--compare-token",
        action="store_true",
        help="count each --compare-root tree with the cached user token too",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (dumps, logs)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="count only the target labelled TEXT (repeatable; the plain proxy"
        " and the --compare-root target are always counted)",
    )
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install -y valgrind")
    targets = [
        Target("plain proxy", "plain", AUTH_PATH),
        Target("keygate public route", "keygate", PUBLIC_PATH),
        Target("keygate cached key", "keygate", AUTH_PATH),
        Target("keygate cached key, access log on", "keygate", AUTH_PATH, access_log=True),
        Target("keygate cached user token", "keygate", AUTH_PATH, token=True),
    ]
    if args.only:
        targets = [t for t in targets if t.kind == "plain" or t.label in args.only]
    for root in args.compare_root:
        other = Path(root).resolve()
        targets.append(Target(f"keygate@{other.name} cached key", "keygate", AUTH_PATH, other))
        if args.compare_token:
            targets.append(
                Target(
                    f"keygate@{other.name} cached user token",
                    "keygate",
                    AUTH_PATH,
                    other,
                    token=True,
                )
            )
    tmp = Path(tempfile.mkdtemp(prefix="keygate-instr-"))
    print(f"working in {tmp}", flush=True)
    procs = Procs()
    pg, rd = EmbeddedPostgres(tmp / "pg"), EmbeddedRedis(tmp / "redis")
    issuer = LocalIssuer()
    try:
        pg.start()
        rd.start()
        key = asyncio.run(create_key(pg.url, rd.url))
        upstream_port = free_port()
        upstream = procs.start(
            [PYTHON, str(HERE / "fixed_upstream.py"), "--port", str(upstream_port)],
            log=tmp / "upstream.log",
        )
        wait_ready(f"http://127.0.0.1:{upstream_port}/", upstream, 30)
        results: dict[str, float] = {}
        for target in targets:
            results[target.label] = count(
                target,
                tmp,
                procs,
                upstream_port,
                pg.url,
                rd.url,
                issuer.token() if target.token else key,
                args.requests,
                issuer.config(),
            )
            print(
                f"  {target.label:<36} {results[target.label]:>10,.0f} instructions/request",
                flush=True,
            )
        plain = results["plain proxy"]
        print("\n| target | instructions/request | ÷ plain proxy |\n|---|---:|---:|")
        for label, value in results.items():
            print(f"| {label} | {value:,.0f} | {value / plain:.2f}x |")
    finally:
        procs.stop_all()
        issuer.close()
        rd.destroy()
        pg.destroy()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
