"""Prometheus metrics with the names of the contract (SPEC §8).

Labels are bounded: route names come from the config, outcomes and tiers are fixed sets.
Never a path, a key, an org or anything else a client controls.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

from gateway import __version__
from gateway.observability.processes import WorkerProcessCollector
from gateway.observability.tallies import CounterTally, EventTally, HistogramTally

# No `*_created` series: they are not in the contract, and multiprocess mode has none, so
# one worker and several would expose different metric names.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Sub-millisecond resolution for the gateway's own overhead, up to upstream-scale latencies.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

REGISTRY = CollectorRegistry(auto_describe=True)

requests_total = Counter(
    "keygate_requests_total",
    "Requests decided (proxied, or checked for another proxy) by route, method, status code"
    " and outcome.",
    ["route", "method", "code", "outcome"],
    registry=REGISTRY,
)
request_duration = Histogram(
    "keygate_request_duration_seconds",
    "Time from request received to response finished, by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
upstream_duration = Histogram(
    "keygate_upstream_duration_seconds",
    "Time from request sent upstream to response headers received, by upstream.",
    ["upstream"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
check_requests = Counter(
    "keygate_check_requests_total",
    "External authorization checks by the API that asked (envoy, envoy_grpc, nginx,"
    " forward_auth) and outcome; also counted in keygate_requests_total.",
    ["api", "outcome"],
    registry=REGISTRY,
)
key_cache_requests = Counter(
    "keygate_key_cache_requests_total",
    "Key lookups by cache tier and result.",
    ["tier", "result"],
    registry=REGISTRY,
)
key_verifications = Counter(
    "keygate_key_verifications_total",
    "argon2 verifications of presented secrets by result.",
    ["result"],
    registry=REGISTRY,
)
key_verification_duration = Histogram(
    "keygate_key_verification_duration_seconds",
    "Time of one argon2 verification, including the wait for a verify thread.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
last_used_pending = Gauge(
    "keygate_last_used_pending",
    "last_used_at stamps waiting to be flushed.",
    registry=REGISTRY,
    multiprocess_mode="livesum",  # summed over the live workers of an instance
)
last_used_flushes = Counter(
    "keygate_last_used_flushes_total",
    "Batched last_used_at flushes.",
    registry=REGISTRY,
)
store_errors = Counter(
    "keygate_store_errors_total",
    "Failed calls to a store.",
    ["store"],
    registry=REGISTRY,
)
background_restarts = Counter(
    "keygate_background_restarts_total",
    "Restarts of a crashed background task (invalidation listener, flushes, ...).",
    ["task"],
    registry=REGISTRY,
)

admin_requests = Counter(
    "keygate_admin_requests_total",
    "Admin API requests by OpenAPI operation id (none: no operation matched) and status code,"
    " failed authentications included.",
    ["operation", "code"],
    registry=REGISTRY,
)
build_info = Gauge(
    "keygate_build_info",
    "Always 1; the running version in its label.",
    ["version"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
build_info.labels(__version__).set(1)
store_up = Gauge(
    "keygate_store_up",
    "1 when the store answered a ping at the last scrape, else 0.",
    ["store"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",  # the scraped worker's ping just now
)
secret_mismatch = Gauge(
    "keygate_secret_mismatch",
    "1 while this instance's KEYGATE_SECRET differs from the one another instance recorded"
    " in Redis (cached verifiers are then never matched: every key costs argon2).",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)

# The per-request metrics, tallied and flushed in batches (see tallies.py).
REQUESTS = CounterTally(requests_total)
CHECKS = CounterTally(check_requests)
REQUEST_DURATION = HistogramTally(request_duration)
UPSTREAM_DURATION = HistogramTally(upstream_duration)
KEY_CACHE = CounterTally(key_cache_requests)
LOCAL_HIT = ("local", "hit")
# A key found by its proof in the local cache (every cached-key request): `.count += 1`.
LOCAL_HITS = EventTally(key_cache_requests, LOCAL_HIT)
_TALLIES = (REQUESTS, CHECKS, REQUEST_DURATION, UPSTREAM_DURATION, KEY_CACHE, LOCAL_HITS)
FLUSH_INTERVAL = 1.0  # seconds; how stale another worker's figures may be in /metrics

# Pre-resolved children for the rarer events (label lookup costs a dict access and a lock).
LOCAL_MISS = key_cache_requests.labels("local", "miss")
REDIS_HIT = key_cache_requests.labels("redis", "hit")
REDIS_MISS = key_cache_requests.labels("redis", "miss")
POSTGRES_HIT = key_cache_requests.labels("postgres", "hit")
POSTGRES_MISS = key_cache_requests.labels("postgres", "miss")
POSTGRES_ERRORS = store_errors.labels("postgres")
REDIS_ERRORS = store_errors.labels("redis")


def flush_tallies() -> None:
    for tally in _TALLIES:
        tally.flush()


def record_store_up(store: str, up: bool) -> None:
    store_up.labels(store).set(1 if up else 0)


# process_* of every worker (processes.py); in the registry scraped with one worker, and
# added to the aggregating registry of each scrape with several.
_PROCESSES = WorkerProcessCollector()
REGISTRY.register(_PROCESSES)


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The exposition and its content type: this process's metrics, or every worker's.

    OpenMetrics when `accept` (the scraper's Accept header) asks for it, else the text
    format 0.0.4. `keygate serve --workers N` sets PROMETHEUS_MULTIPROC_DIR before
    starting workers, so each writes its samples to shared files and any worker's /metrics
    sums them all.
    """
    flush_tallies()
    encoder, content_type = choose_encoder(accept or "")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(_PROCESSES)
        return encoder(registry), content_type
    return encoder(REGISTRY), content_type
