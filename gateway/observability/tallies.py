"""Per-request metrics tallied in plain dicts and added to prometheus_client in batches.

Every proxied request moves three metrics (requests, request duration, upstream duration)
and a cached-key request a fourth (the local cache hit). Through prometheus_client each
is several Python calls and a lock, and with several workers a write to a shared memory
map: together 5 % of a request's instructions with one worker, 9 % with several
(`tests/perf/count_instructions.py`). Here a request costs a dict update and a bisect;
`metrics.flush_tallies()` adds the tallies to the same metrics once per second (the `metrics-flush`
task) and before every exposition, so the scraped worker's own figures are always
current and another worker's requests appear within a second.

Only the event-loop thread records and flushes; no locks needed.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from prometheus_client import Counter, Histogram


class CounterTally:
    """Counts per label values, added to `counter` by `flush`."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.pending: dict[tuple[str, ...], int] = {}

    def add(self, labels: tuple[str, ...]) -> None:
        pending = self.pending
        pending[labels] = pending.get(labels, 0) + 1

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for labels, count in pending.items():
            self.counter.labels(*labels).inc(count)


@dataclass(slots=True)
class _Bucketed:
    counts: list[int]  # per bucket, the last one for +Inf
    total: float = 0.0


class HistogramTally:
    """Observations per label value, bucketed as `histogram` buckets them."""

    def __init__(self, histogram: Histogram, buckets: tuple[float, ...]) -> None:
        self.histogram = histogram
        self.bounds = tuple(b for b in buckets if not math.isinf(b))  # +Inf is implicit
        self.pending: dict[str, _Bucketed] = {}

    def observe(self, label: str, value: float) -> None:
        tally = self.pending.get(label)
        if tally is None:
            tally = self.pending[label] = _Bucketed([0] * (len(self.bounds) + 1))
        # prometheus_client counts a value in the first bucket whose bound is >= it.
        tally.counts[bisect.bisect_left(self.bounds, value)] += 1
        tally.total += value

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for label, tally in pending.items():
            add_observations(self.histogram.labels(label), tally.counts, tally.total)


def add_observations(child: Histogram, counts: list[int], total: float) -> None:
    """What `observe()` of every tallied value would have done to a histogram child.

    prometheus_client has no call to add many observations at once, so this adds to the
    child's bucket and sum values directly (`_buckets`, `_sum`, kept by every release
    since 0.1). This is the package's only use of a prometheus_client internal, kept here
    alone: a custom collector would be public API but is not aggregated across workers in
    multiprocess mode. tests/unit/test_tallies.py checks the shape it relies on and that
    the exposition equals that of observe(), so an incompatible release fails the suite.
    """
    buckets = child._buckets
    if len(buckets) != len(counts):
        raise ValueError(f"histogram has {len(buckets)} buckets, tally has {len(counts)}")
    for value, count in zip(buckets, counts, strict=True):
        if count:
            value.inc(count)
    child._sum.inc(total)
