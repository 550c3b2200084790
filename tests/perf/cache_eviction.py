"""Eviction under churn (issue 15, item 2): today's bound (LocalKeyCache) against candidates.

    .venv/bin/python tests/perf/cache_eviction.py [--requests 600000] [--sizes 1000,10000]

A simulation, no servers. Requests come from 100,000 active keys with Zipf popularity
(s = 0.99, like YCSB) plus a share of one-off ids, each seen once (a scan of random
well-formed keys, or long-tail keys used once): each one-off is cached on its miss, as
KeyLookup does today (an unknown id is a negative entry, a valid key a positive one).
Hit rate is counted over the requests for active keys (one-offs can never hit), after a
warm-up of the first sixth of the requests.

Policies (same capacity, entries counted alike):
  2nd chance   gateway.auth.local_cache.LocalKeyCache itself (TTL far beyond the run):
               CLOCK, a hit marks the entry, an unmarked oldest entry is evicted
  2nd+neg      the same, but one-off ids never enter it (what the separate, bounded
               cache of unknown-id gaps gives when the churn is unknown ids)
  LRU          a true LRU (an OrderedDict moved on every hit: LocalKeyCache before its
               hits were made to touch one entry), one-offs kept out as above
  SLRU         segmented LRU: new entries on probation (20 %), a hit promotes to the
               protected segment (80 %), whose LRU end falls back to probation
  W-TinyLFU    a 1 % LRU window before an SLRU main area; an entry leaving the window
               enters the main area only when it was requested more often than the main
               area's victim (frequencies: exact counts here, halved every 10 x capacity
               requests; a real one would use a 4-bit count-min sketch, ~1 byte/entry)
The "shift" workloads re-rank popularity half-way (a new hot set).
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from gateway.auth.local_cache import LocalKeyCache  # noqa: E402
from gateway.keys.state import KeyState  # noqa: E402

ACTIVE = 100_000
STATE = KeyState("k", "org", "kg_live_", "live", ("read",), None, False, 1)


class Policy:
    name = ""

    def access(self, key: str, one_off: bool) -> bool:
        """True on a hit; on a miss, the key is cached (policy permitting)."""
        raise NotImplementedError


class SecondChance(Policy):
    name = "2nd chance (today)"

    def __init__(self, capacity: int) -> None:
        self.cache = LocalKeyCache(ttl=1e9, max_entries=capacity, clock=lambda: 0.0)

    def access(self, key: str, one_off: bool) -> bool:
        if self.cache.get(key) is not None:
            return True
        self.cache.put(key, None if one_off else STATE, ticket=self.cache.ticket())
        return False


class SecondChanceNegApart(SecondChance):
    name = "2nd+neg apart"

    def access(self, key: str, one_off: bool) -> bool:
        if one_off:
            return False
        return super().access(key, one_off)


class LRUNegApart(Policy):
    name = "LRU+neg apart"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[str, None] = OrderedDict()

    def access(self, key: str, one_off: bool) -> bool:
        if one_off:
            return False
        if key in self.entries:
            self.entries.move_to_end(key)
            return True
        self.entries[key] = None
        if len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return False


class SLRU(Policy):
    name = "SLRU"

    def __init__(self, capacity: int, protected_share: float = 0.8) -> None:
        self.protected_cap = max(1, int(capacity * protected_share))
        self.capacity = capacity
        self.probation: OrderedDict[str, None] = OrderedDict()
        self.protected: OrderedDict[str, None] = OrderedDict()

    def hit(self, key: str) -> bool:
        if key in self.protected:
            self.protected.move_to_end(key)
            return True
        if key in self.probation:
            del self.probation[key]
            self.protected[key] = None
            if len(self.protected) > self.protected_cap:
                demoted, _ = self.protected.popitem(last=False)
                self.probation[demoted] = None
            return True
        return False

    def victim(self) -> str | None:
        if len(self.probation) + len(self.protected) < self.capacity:
            return None
        if self.probation:
            return next(iter(self.probation))
        return next(iter(self.protected))

    def evict(self, key: str) -> None:
        if key in self.probation:
            del self.probation[key]
        else:
            del self.protected[key]

    def insert(self, key: str) -> None:
        victim = self.victim()
        if victim is not None:
            self.evict(victim)
        self.probation[key] = None

    def access(self, key: str, one_off: bool) -> bool:
        if self.hit(key):
            return True
        self.insert(key)
        return False


class WTinyLFU(Policy):
    name = "W-TinyLFU-lite"

    def __init__(self, capacity: int) -> None:
        self.window_cap = max(1, capacity // 100)
        self.window: OrderedDict[str, None] = OrderedDict()
        self.main = SLRU(capacity - self.window_cap)
        self.freq: dict[str, int] = {}
        self.sample = 10 * capacity
        self.seen = 0

    def count(self, key: str) -> None:
        self.freq[key] = self.freq.get(key, 0) + 1
        self.seen += 1
        if self.seen >= self.sample:  # aging: halve every count, drop the zeros
            self.freq = {k: v // 2 for k, v in self.freq.items() if v > 1}
            self.seen //= 2

    def access(self, key: str, one_off: bool) -> bool:
        self.count(key)
        if key in self.window:
            self.window.move_to_end(key)
            return True
        if self.main.hit(key):
            return True
        self.window[key] = None
        if len(self.window) > self.window_cap:
            candidate, _ = self.window.popitem(last=False)
            victim = self.main.victim()
            if victim is None:
                self.main.probation[candidate] = None
            elif self.freq.get(candidate, 0) > self.freq.get(victim, 0):
                self.main.evict(victim)
                self.main.probation[candidate] = None
        return False


POLICIES: list[Callable[[int], Policy]] = [
    SecondChance,
    SecondChanceNegApart,
    LRUNegApart,
    SLRU,
    WTinyLFU,
]


def workload(
    requests: int, churn: float, shift: bool, rng: random.Random, s: float = 0.99
) -> list[tuple[str, bool]]:
    weights = list(itertools.accumulate(1.0 / (i + 1) ** s for i in range(ACTIVE)))
    ranks = rng.choices(range(ACTIVE), cum_weights=weights, k=requests)
    ids = [f"a{i:06d}" for i in range(ACTIVE)]
    shifted = ids[:]
    rng.shuffle(shifted)
    out: list[tuple[str, bool]] = []
    one_off = itertools.count()
    for n, rank in enumerate(ranks):
        if rng.random() < churn:
            out.append((f"x{next(one_off):08d}", True))
        else:
            out.append(((shifted if shift and n >= requests // 2 else ids)[rank], False))
    return out


def simulate(policy: Policy, reqs: list[tuple[str, bool]], warm: int) -> float:
    hits = total = 0
    access = policy.access
    for n, (key, one_off) in enumerate(reqs):
        hit = access(key, one_off)
        if n >= warm and not one_off:
            total += 1
            hits += hit
    return hits / total if total else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=600_000)
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--seed", type=int, default=15)
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    workloads = [
        ("Zipf only", 0.0, False),
        ("Zipf + 20 % one-off", 0.2, False),
        ("Zipf + 50 % one-off", 0.5, False),
        ("shift + 20 % one-off", 0.2, True),
    ]
    names = [f(1).name for f in POLICIES]
    print(
        f"{ACTIVE:,} active keys, Zipf s=0.99, {args.requests:,} requests (hit rate over the "
        f"active-key requests after the first {args.requests // 6:,})\n"
    )
    print("| workload | max_entries | " + " | ".join(names) + " |")
    print("|---|--:|" + "--:|" * len(names))
    for label, churn, shift in workloads:
        reqs = workload(args.requests, churn, shift, random.Random(args.seed))
        for size in sizes:
            rates = [simulate(f(size), reqs, args.requests // 6) for f in POLICIES]
            print(f"| {label} | {size:,} | " + " | ".join(f"{r:.1%}" for r in rates) + " |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
