"""Function-level profile of the cached-key path next to the plain proxy (not a test).

    .venv/bin/python tests/perf/profile_calls.py [--requests 4000] [--top 40] [--keep]

callgrind (count_instructions.py) counts what a request costs in all; it cannot say in
which Python function. This runs the plain proxy and Keygate (cached API key, access log
off, the same config and request as count_instructions.py) each under cProfile, switched
on and off around N sequential keep-alive requests (SIGUSR1 / SIGUSR2), and prints per
request: each function's calls and own time, Keygate's and the plain proxy's side by
side, sorted by Keygate's own time. cProfile's own overhead inflates every call alike, so
read the columns as "where, and how many calls", and the instruction counts as "how much".
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_proxy import PYTHON, ROOT, SECRET, Procs, create_key, keygate_config  # noqa: E402
from count_instructions import AUTH_PATH, PUBLIC_PATH, drive, wait_ready  # noqa: E402

from gateway.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402

# Runs the server's own entry point with a profiler that signals switch on and off.
BOOTSTRAP = """\
import cProfile, runpy, signal, sys
out, kind, *argv = sys.argv[1:]
profiler = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
def _dump(*_):
    profiler.disable()
    profiler.dump_stats(out)
signal.signal(signal.SIGUSR2, _dump)
sys.argv = argv
if kind == "plain":
    runpy.run_path(argv[0], run_name="__main__")
else:
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
"""

Row = tuple[int, float]  # calls per request, own µs per request


def profile(
    kind: str, tmp: Path, procs: Procs, upstream: int, pg: str, rd: str, key: str, n: int
) -> dict[str, Row]:
    port = free_port()
    out = tmp / f"{kind}.pstats"
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
    if kind == "plain":
        argv = [str(HERE / "plain_proxy.py"), "--port", str(port)]
        argv += ["--upstream", f"http://127.0.0.1:{upstream}"]
        ready = f"http://127.0.0.1:{port}{PUBLIC_PATH}"
    else:
        admin = free_port()
        cfg = tmp / "keygate.yaml"
        keygate_config(cfg, port, admin, upstream, False, pg, rd)
        argv = ["gateway", "serve", "--config", str(cfg)]
        env["KEYGATE_SECRET"] = SECRET
        ready = f"http://127.0.0.1:{admin}/readyz"
    proc = procs.start(
        [PYTHON, "-c", BOOTSTRAP, str(out), kind, *argv],
        env=env,
        log=tmp / f"{kind}.log",
        cwd=ROOT,
    )
    try:
        wait_ready(ready, proc, 60)
        drive(port, AUTH_PATH, key, 500)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        drive(port, AUTH_PATH, key, n)
        proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        procs.stop(proc, timeout=10)
    stats = pstats.Stats(str(out))
    rows: dict[str, Row] = {}
    for (file, line, name), (_cc, calls, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}:{name}" if line else name
        rows[where] = (calls // n, tt / n * 1e6)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="keygate-prof-"))
    procs = Procs()
    pg, rd = EmbeddedPostgres(tmp / "pg"), EmbeddedRedis(tmp / "redis")
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
        found = {
            kind: profile(kind, tmp, procs, upstream_port, pg.url, rd.url, key, args.requests)
            for kind in ("plain", "keygate")
        }
    finally:
        procs.stop_all()
        rd.destroy()
        pg.destroy()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    plain, keygate = found["plain"], found["keygate"]
    for label, rows in (("plain", plain), ("keygate", keygate)):
        print(
            f"{label}: {sum(c for c, _ in rows.values())} calls/request,"
            f" {sum(t for _, t in rows.values()):.1f} µs/request (profiled)"
        )
    ordering = {
        "Keygate's own time": lambda k: -keygate.get(k, (0, 0.0))[1],
        "Keygate's minus the plain proxy's own time": lambda k: (
            plain.get(k, (0, 0.0))[1] - keygate.get(k, (0, 0.0))[1]
        ),
    }
    for title, order in ordering.items():
        print(f"\nsorted by {title}")
        print(f"{'function':<70} {'kg calls':>8} {'kg µs':>7} {'plain':>6} {'pl µs':>7}")
        for name in sorted(set(plain) | set(keygate), key=order)[: args.top]:
            kc, kt = keygate.get(name, (0, 0.0))
            pc, pt = plain.get(name, (0, 0.0))
            print(f"{name[-70:]:<70} {kc:>8} {kt:>7.2f} {pc:>6} {pt:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
