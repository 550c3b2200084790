"""Batched metrics (gateway/observability/tallies.py) expose what direct calls would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.observability.metrics import LATENCY_BUCKETS
from gateway.observability.tallies import CounterTally, HistogramTally


def exposition_without_names(registry: CollectorRegistry, name: str) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(
        line.replace(name, "m")
        for line in text.splitlines()
        if line.startswith(name) and "_created" not in line
    )


def test_histogram_tally_exposes_exactly_what_observe_would() -> None:
    registry = CollectorRegistry()
    direct = Histogram("direct", "d", ["route"], buckets=LATENCY_BUCKETS, registry=registry)
    tallied = Histogram("tallied", "t", ["route"], buckets=LATENCY_BUCKETS, registry=registry)
    tally = HistogramTally(tallied)
    rng = random.Random(7)
    # Every bound itself (a value equal to a bound belongs to that bucket), values between
    # and beyond the bounds, zero, and a spread of typical latencies.
    values = [*LATENCY_BUCKETS, 0.0, 31.0, 1e9, *(rng.expovariate(200) for _ in range(500))]
    for i, value in enumerate(values):
        route = ("a", "b")[i % 2]
        direct.labels(route).observe(value)
        tally.observe(route, value)
    assert tally.pending
    tally.flush()
    assert not tally.pending
    assert exposition_without_names(registry, "tallied") == exposition_without_names(
        registry, "direct"
    )
    # A second batch adds to the first.
    direct.labels("a").observe(0.003)
    tally.observe("a", 0.003)
    tally.flush()
    assert exposition_without_names(registry, "tallied") == exposition_without_names(
        registry, "direct"
    )


def test_counter_tally_adds_its_counts_per_label_set() -> None:
    registry = CollectorRegistry()
    counter = Counter("requests", "r", ["route", "code"], registry=registry)
    tally = CounterTally(counter)
    for _ in range(3):
        tally.add(("a", "200"))
    tally.add(("b", "404"))
    assert registry.get_sample_value("requests_total", {"route": "a", "code": "200"}) is None
    tally.flush()
    assert registry.get_sample_value("requests_total", {"route": "a", "code": "200"}) == 3
    assert registry.get_sample_value("requests_total", {"route": "b", "code": "404"}) == 1
    tally.add(("a", "200"))
    tally.flush()
    tally.flush()  # nothing pending: no change
    assert registry.get_sample_value("requests_total", {"route": "a", "code": "200"}) == 4
