"""Per-request metrics tallied in plain dicts and added to prometheus_client in batches.

Every proxied request moves three metrics (requests, request duration, upstream duration)
and a cached-key request a fourth (the local cache hit). Through prometheus_client each
is several Python calls and a lock, and with several workers a write to a shared memory
map: together 5 % of a request's instructions with one worker, 9 % with several
(`tests/perf/count_instructions.py`). Here a request costs a dict update (a counter) or a
list append (a duration); `metrics.flush_tallies()` hands the tallies to the same metrics
once per second (the `metrics-flush` task) and before every exposition, so the scraped
worker's own figures are always current and another worker's requests appear within a
second. Counters are added in one call per label set; durations are observed one by one
through the public `observe()` at flush (prometheus_client has no batch call), so only
their lock and shared-memory writes move off the request, not their count.

Only the event-loop thread records and flushes; no locks needed.
"""

from __future__ import annotations

from collections import defaultdict

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


class EventTally:
    """Counts of one fixed label set, added to `counter` by `flush`.

    For the commonest event (a request answered from the local key cache): the caller
    increments `count` in place, an attribute store instead of a call and a dict update.
    """

    __slots__ = ("count", "counter", "labels")

    def __init__(self, counter: Counter, labels: tuple[str, ...]) -> None:
        self.counter = counter
        self.labels = labels
        self.count = 0

    def flush(self) -> None:
        count, self.count = self.count, 0
        if count:
            self.counter.labels(*self.labels).inc(count)


class HistogramTally:
    """Observations per label value, handed to `histogram` by `flush`.

    prometheus_client has no public call that adds many observations at once (and a
    custom collector is not aggregated across workers in multiprocess mode), so the values
    themselves are kept: a request costs a list append, and `flush` observes each value
    through the public `observe()`, exactly as a direct call would have.
    """

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.pending: defaultdict[str, list[float]] = defaultdict(list)

    def observe(self, label: str, value: float) -> None:
        self.pending[label].append(value)

    def flush(self) -> None:
        pending, self.pending = self.pending, defaultdict(list)
        for label, values in pending.items():
            observe = self.histogram.labels(label).observe
            for value in values:
                observe(value)
