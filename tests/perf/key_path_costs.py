"""Per-request costs of the cached-key path that grow with the number of active keys
(issue 15): each step timed in-process with 1 key and with N keys, requests in random
key order (as bench_keys.py's wrk script sends them).

    .venv/bin/python tests/perf/key_path_costs.py [--keys 1,10000,100000] [--calls 300000]

Steps: LocalKeyCache.proven (one table, the proof kept in the entry, the second-chance
mark), the identity headers (authenticate.identity_headers, kept with each state), and the
last_used recorder's per-request record. Best of 3 runs; nanoseconds per call. In-process
loops run hot in the CPU caches, so the absolute figures understate the server's (see
README, "Previous round"): compare the columns, not the totals.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from gateway.auth import authenticate  # noqa: E402
from gateway.auth.last_used import LastUsedRecorder  # noqa: E402
from gateway.auth.local_cache import LocalKeyCache  # noqa: E402
from gateway.keys import format as key_format  # noqa: E402
from gateway.keys.hashing import TokenProofs  # noqa: E402
from gateway.keys.state import KeyState  # noqa: E402


def best(fn, calls: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) / calls * 1e9


def costs(n: int, calls: int) -> dict[str, float]:
    rng = random.Random(15)
    keys = [key_format.generate_key("kg_live_") for _ in range(n)]
    proofs = TokenProofs()
    cache = LocalKeyCache(ttl=1e9, max_entries=max(n, 100_000))
    states = []
    presented = []
    for full, parts in keys:
        state = KeyState(parts.key_id, "bench", "kg_live_", "live", ("read",), None, False, 1)
        states.append(state)
        cache.put(parts.key_id, state, b"v" * 32, ticket=cache.ticket())
        cache.put_proof(parts.key_id, proofs.of(full))
        presented.append((parts.key_id, proofs.of(full)))
    order = [rng.randrange(n) for _ in range(calls)]
    seq_p = [presented[i] for i in order]
    seq_s = [states[i] for i in order]
    seq_id = [states[i].id for i in order]
    proven = cache.proven
    headers = authenticate.identity_headers
    recorder = LastUsedRecorder(db=None, interval=5.0, max_pending=1_000_000)  # type: ignore[arg-type]
    record = recorder.record

    def run_proven() -> None:
        for key_id, proof in seq_p:
            proven(key_id, proof)

    def run_headers() -> None:
        for state in seq_s:
            headers(state)

    def run_record() -> None:
        for key_id in seq_id:
            record(key_id)

    def run_empty() -> None:
        for _ in seq_s:
            pass

    empty = best(run_empty, calls)
    out = {
        "LocalKeyCache.proven": best(run_proven, calls) - empty,
        "identity_headers (kept with the state)": best(run_headers, calls) - empty,
        "last_used record": best(run_record, calls) - empty,
    }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", default="1,10000,100000")
    p.add_argument("--calls", type=int, default=300_000)
    args = p.parse_args()
    counts = [int(x) for x in args.keys.split(",") if x]
    results = {n: costs(n, args.calls) for n in counts}
    steps = list(next(iter(results.values())))
    print("| step (ns/call) | " + " | ".join(f"{n:,} keys" for n in counts) + " |")
    print("|---|" + "--:|" * len(counts))
    for step in steps:
        unit = " %" if "rate" in step else ""
        print(f"| {step} | " + " | ".join(f"{results[n][step]:.0f}{unit}" for n in counts) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
