"""SPEC §8 metrics, read from /metrics of real `keygate serve` processes.

Each outcome is driven once through the proxy and keygate_requests_total must move by
exactly one, in exactly one series, with the expected labels. The exposition is parsed
with prometheus-client's own parser and linted with `promtool check metrics`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.keys.format import base62_checksum
from tests.integration.observability.conftest import root_of, started, stopped
from tests.support.admin_client import AdminClient
from tests.support.credentials import ISSUED, bearer
from tests.support.gateway_process import GatewayProcess, UpstreamProcess, closed_port
from tests.support.metrics import Samples, labels, moved, parse_metrics, scrape
from tests.support.spec import PROCESS_METRICS, SPEC_METRICS
from tests.support.stores import Stores

ROUTE_NAMES = {"public", "read", "org", "small", "slow", "dead", "none"}


@dataclass
class Keys:
    org: str
    other_org: str
    read: str
    write: str
    other_scope: str
    revoked: str
    expired: str
    unused: str  # in no cache anywhere: for the gateway without Postgres


@pytest.fixture(scope="module")
def keys(metrics_gateway: GatewayProcess) -> Keys:
    async def make() -> Keys:
        async with aiohttp.ClientSession() as http:
            root = root_of(http, metrics_gateway)
            org, other = await root.create_org("metrics"), await root.create_org("elsewhere")
            made = {
                name: await root.create_key(org, scopes)
                for name, scopes in [
                    ("read", ["read"]),
                    ("write", ["write"]),
                    ("other_scope", ["events"]),
                    ("revoked", ["read"]),
                    ("unused", ["read"]),
                ]
            }
            expiring = await root.create_key(org, ["read"], expires_in="1s")
            revoked_id = made["revoked"]["key"]["id"]
            (await root.call("POST", f"/orgs/{org}/keys/{revoked_id}/revoke")).ok()
            await asyncio.sleep(1.05)
            return Keys(
                org,
                other,
                made["read"]["secret"],
                made["write"]["secret"],
                made["other_scope"]["secret"],
                made["revoked"]["secret"],
                expiring["secret"],
                made["unused"]["secret"],
            )

    return asyncio.run(make())


@pytest.fixture(scope="module")
def no_db_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, obs_log_dir: Path
) -> Iterator[GatewayProcess]:
    """Postgres at a closed port; Redis and KEYGATE_SECRET shared with the metrics gateway."""
    dead_db = f"postgresql://keygate@127.0.0.1:{closed_port()}/keygate"
    gw = started(stores, echo_upstream, obs_log_dir, "no-db-gateway", database_url=dead_db)
    try:
        yield gw
    except BaseException:
        gw.process.kill()
        raise
    stopped(gw, "the gateway without Postgres")


async def send(http: aiohttp.ClientSession, method: str, url: str, **kwargs: object) -> int:
    async with http.request(method, url, **kwargs) as reply:  # type: ignore[arg-type]
        await reply.read()
        return reply.status


# One proxied request against a base URL; returns its status.
Request = Callable[[aiohttp.ClientSession, str, Keys], Awaitable[int]]


def _get(
    path: str,
    key: Callable[[Keys], str] | None = None,
    headers: Callable[[Keys], dict[str, str]] | None = None,
) -> Request:
    async def request(http: aiohttp.ClientSession, base: str, k: Keys) -> int:
        sent = dict(headers(k)) if headers else {}
        if key is not None:
            sent.update(bearer(key(k)))
        return await send(
            http, "GET", base + path.format(org=k.org, other=k.other_org), headers=sent
        )

    return request


def _post(path: str, key: Callable[[Keys], str], size: int) -> Request:
    async def request(http: aiohttp.ClientSession, base: str, k: Keys) -> int:
        return await send(http, "POST", base + path, headers=bearer(key(k)), data=b"x" * size)

    return request


def _mistyped(k: Keys) -> str:
    return k.read[:-1] + ("a" if k.read[-1] != "a" else "b")  # bad checksum


# (outcome, request, expected route label, method, status)
OUTCOMES: list[tuple[str, Request, str, str, int]] = [
    ("allowed", _get("/api/read/x", lambda k: k.read), "read", "GET", 200),
    ("allowed", _get("/public/x"), "public", "GET", 200),
    ("no_route", _get("/nowhere/at/all", lambda k: k.read), "none", "GET", 404),
    ("invalid_path", _get("/api/read/a%2Fb", lambda k: k.read), "none", "GET", 400),
    (
        "invalid_request",
        _get("/api/read/x", lambda k: k.read, lambda k: {"X-API-Key": k.write}),
        "read",
        "GET",
        400,
    ),
    ("missing_api_key", _get("/api/read/x"), "read", "GET", 401),
    ("invalid_api_key", _get("/api/read/x", _mistyped), "read", "GET", 401),
    ("expired_api_key", _get("/api/read/x", lambda k: k.expired), "read", "GET", 401),
    ("revoked_api_key", _get("/api/read/x", lambda k: k.revoked), "read", "GET", 401),
    ("insufficient_scope", _get("/api/read/x", lambda k: k.other_scope), "read", "GET", 403),
    ("wrong_org", _get("/api/orgs/{other}/x", lambda k: k.read), "org", "GET", 403),
    ("body_too_large", _post("/api/small/x", lambda k: k.write, 4096), "small", "POST", 413),
    ("allowed", _post("/api/small/x", lambda k: k.write, 100), "small", "POST", 200),
    ("upstream_unavailable", _get("/dead/x", lambda k: k.read), "dead", "GET", 502),
    ("upstream_timeout", _get("/_demo/slow?seconds=3", lambda k: k.read), "slow", "GET", 504),
]


async def test_each_outcome_moves_requests_total_by_exactly_one(
    metrics_gateway: GatewayProcess, keys: Keys, http: aiohttp.ClientSession
) -> None:
    for outcome, request, route, method, status in OUTCOMES:
        before = await scrape(http, metrics_gateway.admin_url)
        assert await request(http, metrics_gateway.url, keys) == status, outcome
        after = await scrape(http, metrics_gateway.admin_url)
        expected = labels(route=route, method=method, code=str(status), outcome=outcome)
        assert moved(before, after, "keygate_requests_total") == {expected: 1.0}, outcome
        # The duration histogram counted the same request, under the same route.
        assert moved(before, after, "keygate_request_duration_seconds_count") == {
            labels(route=route): 1.0
        }, outcome
    # A forwarded request was timed per upstream.
    samples = await scrape(http, metrics_gateway.admin_url)
    upstreams = {
        dict(lbl)["upstream"]
        for (name, lbl) in samples
        if name == "keygate_upstream_duration_seconds_count"
    }
    assert {"echo"} <= upstreams <= {"echo", "slow", "dead"}


async def test_auth_unavailable_is_counted(
    no_db_gateway: GatewayProcess, keys: Keys, http: aiohttp.ClientSession
) -> None:
    before = await scrape(http, no_db_gateway.admin_url)
    assert (
        await send(http, "GET", no_db_gateway.url + "/api/read/x", headers=bearer(keys.unused))
        == 503
    )
    after = await scrape(http, no_db_gateway.admin_url)
    assert moved(before, after, "keygate_requests_total") == {
        labels(route="read", method="GET", code="503", outcome="auth_unavailable"): 1.0
    }
    errors = moved(before, after, "keygate_store_errors_total")
    assert set(errors) == {labels(store="postgres")} and errors[labels(store="postgres")] >= 1


async def test_cache_tiers_and_verifications_move(
    metrics_gateway: GatewayProcess,
    no_db_gateway: GatewayProcess,
    http: aiohttp.ClientSession,
) -> None:
    root: AdminClient = root_of(http, metrics_gateway)
    org = await root.create_org("tiers")
    fresh = (await root.create_key(org, ["read"]))["secret"]
    url = metrics_gateway.url + "/api/read/x"
    cache, verifications = "keygate_key_cache_requests_total", "keygate_key_verifications_total"

    before = await scrape(http, metrics_gateway.admin_url)
    assert await send(http, "GET", url, headers=bearer(fresh)) == 200
    after = await scrape(http, metrics_gateway.admin_url)
    # The create announced the key, writing its state (no verifier) into Redis: the state
    # is found there, the hash to verify the secret against is read from Postgres.
    assert moved(before, after, cache) == {
        labels(tier="local", result="miss"): 1.0,
        labels(tier="redis", result="hit"): 1.0,
        labels(tier="postgres", result="hit"): 1.0,
    }
    assert moved(before, after, verifications) == {labels(result="valid"): 1.0}
    assert moved(before, after, "keygate_key_verification_duration_seconds_count") == {
        frozenset(): 1.0
    }

    before = after
    assert await send(http, "GET", url, headers=bearer(fresh)) == 200
    after = await scrape(http, metrics_gateway.admin_url)
    assert moved(before, after, cache) == {labels(tier="local", result="hit"): 1.0}
    assert moved(before, after, verifications) == {}, "argon2 ran again for a cached key"

    # Another instance finds the verified key in Redis: no argon2, no Postgres.
    before = await scrape(http, no_db_gateway.admin_url)
    assert await send(http, "GET", no_db_gateway.url + "/api/read/x", headers=bearer(fresh)) == 200
    after = await scrape(http, no_db_gateway.admin_url)
    assert moved(before, after, cache) == {
        labels(tier="local", result="miss"): 1.0,
        labels(tier="redis", result="hit"): 1.0,
    }
    assert moved(before, after, verifications) == {}

    # A wrong secret for a key id never seen here: one failed verification.
    other = (await root.create_key(org, ["read"]))["secret"]
    wrong = other[:-38] + "Q" * 32
    wrong = wrong + base62_checksum(wrong)
    ISSUED.append(wrong)
    before = await scrape(http, metrics_gateway.admin_url)
    assert await send(http, "GET", url, headers=bearer(wrong)) == 401
    after = await scrape(http, metrics_gateway.admin_url)
    assert moved(before, after, verifications) == {labels(result="invalid"): 1.0}


async def test_last_used_flushes_are_counted(
    metrics_gateway: GatewayProcess, keys: Keys, http: aiohttp.ClientSession
) -> None:
    before = await scrape(http, metrics_gateway.admin_url)
    assert (
        await send(http, "GET", metrics_gateway.url + "/api/read/x", headers=bearer(keys.read))
        == 200
    )
    for _ in range(60):  # flush interval 1s
        after = await scrape(http, metrics_gateway.admin_url)
        if moved(before, after, "keygate_last_used_flushes_total"):
            break
        await asyncio.sleep(0.05)
    assert moved(before, after, "keygate_last_used_flushes_total")
    assert after[("keygate_last_used_pending", frozenset())] >= 0


async def test_admin_traffic_is_not_counted(
    metrics_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    root = root_of(http, metrics_gateway)
    before = await scrape(http, metrics_gateway.admin_url)
    await root.create_org("uncounted")
    for path in ("/orgs", "/openapi.json", "/healthz", "/readyz", "/nope", "/metrics"):
        await root.call("GET", path)
    await root.as_("bad").call("GET", "/orgs")
    after = await scrape(http, metrics_gateway.admin_url)
    assert moved(before, after, "keygate_requests_total") == {}
    assert moved(before, after, "keygate_request_duration_seconds_count") == {}


async def test_exposition_names_labels_and_buckets(
    metrics_gateway: GatewayProcess, keys: Keys, http: aiohttp.ClientSession
) -> None:
    await send(http, "GET", metrics_gateway.url + "/api/read/x", headers=bearer(keys.read))
    await send(http, "GET", metrics_gateway.url + "/api/read/" + keys.read)
    async with http.get(metrics_gateway.admin_url + "/metrics") as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = await reply.text()
    families = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("keygate_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            families[name] = family.type
    assert families == SPEC_METRICS

    samples = set(parse_metrics(text))
    for name, lbl in samples:
        values = dict(lbl)
        if name.startswith("keygate_requests_total"):
            assert set(values) == {"route", "method", "code", "outcome"}
            assert values["route"] in ROUTE_NAMES, values
        for value in values.values():
            assert len(value) < 64 and "/" not in value, (name, values)
            assert not any(k[-38:-6] in value for k in ISSUED), (name, values)

    for histogram in (
        "keygate_request_duration_seconds",
        "keygate_upstream_duration_seconds",
        "keygate_key_verification_duration_seconds",
    ):
        bounds = {float(dict(lbl)["le"]) for name, lbl in samples if name == histogram + "_bucket"}
        sub_ms = sorted(b for b in bounds if b < 0.001)
        assert len(sub_ms) >= 3 and sub_ms[0] <= 0.0001, (histogram, sorted(bounds))


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian/Ubuntu package: prometheus)")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0 and not output.strip(), output


async def test_promtool_finds_nothing_to_lint(
    metrics_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    async with http.get(metrics_gateway.admin_url + "/metrics") as reply:
        promtool_check(await reply.text())


@pytest.fixture(scope="module")
def two_workers(
    stores: Stores, echo_upstream: UpstreamProcess, obs_log_dir: Path
) -> Iterator[GatewayProcess]:
    gw = started(stores, echo_upstream, obs_log_dir, "two-workers", workers=2)
    try:
        # Ready means both workers listen (and handle SIGTERM), not just the first one.
        deadline = time.monotonic() + 30
        while gw.process.stderr().count("proxy listening on") < 2:
            assert time.monotonic() < deadline and gw.process.alive(), gw.process.tail()
            time.sleep(0.05)
        yield gw
    except BaseException:
        gw.process.kill()
        raise
    stopped(gw, "the two-worker gateway")


def worker_pids(pid: int) -> list[str]:
    """The child processes of `keygate serve --workers 2` (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return children.read_text().split()


async def test_counters_aggregate_across_workers(
    two_workers: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    assert len(worker_pids(two_workers.process.pid)) >= 2  # + multiprocessing helpers
    n = 40
    replies = await asyncio.gather(
        *(send(http, "GET", two_workers.url + f"/public/{i}") for i in range(n))
    )
    assert replies == [200] * n
    series = (
        "keygate_requests_total",
        labels(route="public", method="GET", code="200", outcome="allowed"),
    )
    # Each worker adds its tallies to the shared metrics once a second (and the worker
    # answering a scrape adds its own first), so all of them show within about a second.
    deadline = time.monotonic() + 1.0 + 2.0  # FLUSH_INTERVAL plus scheduling slack
    while (await scrape(http, two_workers.admin_url)).get(series) != n:
        assert time.monotonic() < deadline, "another worker's requests never showed up"
        await asyncio.sleep(0.1)
    for _ in range(6):  # each scrape on a new connection: any worker may answer
        samples = await scrape(http, two_workers.admin_url)
        assert samples.get(series) == n
        assert samples[("keygate_request_duration_seconds_count", labels(route="public"))] == n
    async with http.get(two_workers.admin_url + "/metrics") as reply:
        promtool_check(await reply.text())


async def test_invented_methods_share_one_label_value(
    metrics_gateway: GatewayProcess, keys: Keys, http: aiohttp.ClientSession
) -> None:
    """The method label is bounded: methods beyond the common nine are counted as "other".

    (The HTTP parser refuses made-up methods outright; WebDAV and friends get through.)"""
    before = await scrape(http, metrics_gateway.admin_url)
    statuses = [
        await send(http, method, metrics_gateway.url + "/api/read/x", headers=bearer(keys.read))
        for method in ("PROPFIND", "PURGE", "MKCOL")
    ]
    after = await scrape(http, metrics_gateway.admin_url)
    assert 400 not in statuses, statuses
    changes = moved(before, after, "keygate_requests_total")
    assert {dict(lbl)["method"] for lbl in changes} == {"other"}, changes
    assert sum(changes.values()) == 3


async def test_admin_requests_are_counted_by_operation_and_code(
    metrics_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    root = root_of(http, metrics_gateway)
    before = await scrape(http, metrics_gateway.admin_url)
    org = await root.create_org("admin-counted")
    (await root.call("GET", "/orgs")).ok()
    assert (await root.as_("not-the-token").call("GET", "/orgs")).status == 401
    assert (await root.as_(None).call("GET", f"/orgs/{org}/keys")).status == 401
    assert (await root.call("GET", "/nope")).status == 404
    assert (await root.call("DELETE", "/orgs")).status == 405
    for outside in ("/healthz", "/readyz", "/metrics"):  # not the admin API: not counted
        await root.call("GET", outside)
    after = await scrape(http, metrics_gateway.admin_url)
    assert moved(before, after, "keygate_admin_requests_total") == {
        labels(operation="createOrg", code="201"): 1.0,
        labels(operation="listOrgs", code="200"): 1.0,
        labels(operation="listOrgs", code="401"): 1.0,  # failed authentications count
        labels(operation="listKeys", code="401"): 1.0,
        labels(operation="none", code="404"): 1.0,
        labels(operation="none", code="405"): 1.0,
    }


async def test_build_info_and_store_up(
    metrics_gateway: GatewayProcess, no_db_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    samples = await scrape(http, metrics_gateway.admin_url)
    assert samples[("keygate_build_info", labels(version=__version__))] == 1.0
    assert [name for name, _ in samples if name == "keygate_build_info"] == ["keygate_build_info"]
    assert samples[("keygate_store_up", labels(store="postgres"))] == 1.0
    assert samples[("keygate_store_up", labels(store="redis"))] == 1.0
    assert samples[("keygate_secret_mismatch", frozenset())] == 0.0
    down = await scrape(http, no_db_gateway.admin_url)
    assert down[("keygate_store_up", labels(store="postgres"))] == 0.0
    assert down[("keygate_store_up", labels(store="redis"))] == 1.0


async def test_openmetrics_when_the_scraper_asks_for_it(
    metrics_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    async with http.get(
        metrics_gateway.admin_url + "/metrics", headers={"Accept": accept}
    ) as reply:
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await reply.text()
    assert text.endswith("# EOF\n")
    families = {f.name: f.type for f in openmetrics_families(text)}  # type: ignore[no-untyped-call]
    assert families["keygate_requests"] == "counter"
    assert families["keygate_admin_requests"] == "counter"
    assert families["keygate_request_duration_seconds"] == "histogram"
    assert families["process_cpu_seconds"] == "counter"
    async with http.get(
        metrics_gateway.admin_url + "/metrics", headers={"Accept": "text/plain"}
    ) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")


def start_time(pid: str) -> float:
    """process_start_time_seconds of `pid`, computed as prometheus_client computes it."""
    stat = Path(f"/proc/{pid}/stat").read_bytes().split(b")")[-1].split()
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return float(stat[19]) / os.sysconf("SC_CLK_TCK") + boot


async def test_process_metrics_per_worker(
    metrics_gateway: GatewayProcess, two_workers: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    def by_worker(samples: Samples, name: str) -> dict[str, float]:
        return {dict(lbl)["worker"]: value for (n, lbl), value in samples.items() if n == name}

    single = await scrape(http, metrics_gateway.admin_url)
    for name in PROCESS_METRICS:
        assert set(by_worker(single, name)) == {"0"}, name
    assert by_worker(single, "process_start_time_seconds")["0"] == pytest.approx(
        start_time(str(metrics_gateway.process.pid)), abs=0.02
    )

    children = {start_time(pid) for pid in worker_pids(two_workers.process.pid)}
    for _ in range(6):  # each scrape on a new connection: any worker may answer
        samples = await scrape(http, two_workers.admin_url)
        for name in PROCESS_METRICS:
            assert set(by_worker(samples, name)) == {"0", "1"}, name
        assert all(v > 0 for v in by_worker(samples, "process_resident_memory_bytes").values())
        for started_at in by_worker(samples, "process_start_time_seconds").values():
            # Each worker's own figures: the start time of one of the instance's workers.
            assert any(abs(started_at - child) < 0.02 for child in children), started_at
        assert samples[("keygate_store_up", labels(store="redis"))] == 1.0
        # One build_info series per instance, not one per worker.
        assert [lbl for name, lbl in samples if name == "keygate_build_info"] == [
            labels(version=__version__)
        ]
