"""Fixtures for the consistency tests (issue 4): many gateways, one truth, stores that fail.

These tests stop and restart PostgreSQL and Redis, so they run on their OWN embedded pair
(in a temp folder, for this package only), never on the session's shared stores. Redis
persists its data across a restart here (`persist=True`), as a production Redis with RDB
would: that is what lets a stale entry survive an outage and tests the re-sync repairing
it. A trigger installed in this database logs every write of `api_keys.last_used_at` (and
the transaction that made it), so tests count the gateway's stamp writes without guessing.

Every gateway is a real `python -m gateway serve` subprocess; every change goes through
the real service or the real `keygate` CLI (subprocess).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis

from gateway.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from gateway.store.db import Database
from gateway.store.key_cache import CHANNEL
from gateway.store.migrate import migrate
from tests.support.configs import gateway_config, gateway_env
from tests.support.db import fetch
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    start_gateway,
    start_listener,
)
from tests.support.keys import KeyMaker, MadeKey, key_maker

LOCAL_TTL = 5.0  # the default: long enough that only pub/sub can explain a sub-second refusal
FLUSH_INTERVAL = 1.0
STORE_TIMEOUT = 1.0
WORKERS = 2  # per gateway of the fleet

STAMP_LOG_SQL = """
CREATE TABLE IF NOT EXISTS test_stamp_writes (
    key_id        text NOT NULL,
    last_used_at  timestamptz,
    written_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    xact          bigint NOT NULL DEFAULT txid_current()  -- which transaction wrote it
);
CREATE OR REPLACE FUNCTION test_log_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_stamp_writes (key_id, last_used_at) VALUES (NEW.id, NEW.last_used_at);
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS test_log_stamp ON api_keys;
CREATE TRIGGER test_log_stamp AFTER UPDATE OF last_used_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION test_log_stamp();
"""


# ------------------------------------------------------------------------------ stores


@dataclass
class OwnStores:
    """An embedded PostgreSQL + Redis pair that tests may stop and start."""

    pg: EmbeddedPostgres
    redis: EmbeddedRedis

    @property
    def database_url(self) -> str:
        return self.pg.url

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def postgres_running(self) -> bool:
        return (self.pg.data_dir / "postmaster.pid").exists()

    def redis_running(self) -> bool:
        return self.redis.process is not None and self.redis.process.poll() is None

    def start_redis(self) -> None:
        """Start Redis with RDB snapshots on, so its data survives a stop and start (as a
        production Redis's would). EmbeddedRedis(persist=True) passes `--save "60 1"` as
        one argument, which redis-server 6.2 reads as no save points: set them here."""
        self.redis.start()
        client = redis.Redis.from_url(self.redis_url)
        try:
            # A restarted Redis answers while it still loads its snapshot, refusing every
            # command but CONFIG GET ("LOADING" or "Only CONFIG GET is allowed during
            # loading"): wait until it has loaded.
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.config_set("save", "3600 1")
                    break
                except redis.exceptions.ResponseError as exc:  # BusyLoadingError is one too
                    if "loading" not in str(exc).lower() or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def ensure_running(self) -> None:
        """Bring back whatever a failed test left stopped."""
        if not self.postgres_running():
            self.pg.start()
        if not self.redis_running():
            self.start_redis()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await fetch(self.database_url, sql, *args)


@pytest.fixture(scope="package")
def own_stores() -> Iterator[OwnStores]:
    # Not under pytest's basetemp: a concurrent pytest session may prune that folder.
    base = Path(tempfile.mkdtemp(prefix="keygate-consistency-"))
    pg = EmbeddedPostgres(base / "pg")
    rd = EmbeddedRedis(base / "redis", persist=True)
    try:
        try:
            pg.start()
        except subprocess.CalledProcessError as exc:  # initdb's reason is in its stderr
            raise RuntimeError(f"PostgreSQL setup failed: {exc.stderr!r}") from None
        stores = OwnStores(pg, rd)
        stores.start_redis()

        async def prepare() -> None:
            db = Database(pg.url)
            try:
                await migrate(db)
                async with db.connection() as conn:
                    await conn.execute(STAMP_LOG_SQL)
            finally:
                await db.close()

        asyncio.run(prepare())
        yield stores
    finally:
        rd.destroy()
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def _stores_up_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "own_stores" in request.fixturenames:
        request.getfixturevalue("own_stores").ensure_running()


# ------------------------------------------------------------------------------ processes


def fleet_config(upstream_url: str, **sections: Any) -> dict[str, Any]:
    """A gateway on the echo upstream; `sections` replace whole top-level ones."""
    routes = [
        {
            "path": "/api/read/**",
            "methods": ["GET"],
            "upstream": "echo",
            "scopes": ["read"],
            "name": "read",
        },
        {"path": "/ws/**", "upstream": "echo", "websocket": True, "scopes": ["read"], "name": "ws"},
        {
            "path": "/_demo/slow",
            "methods": ["GET"],
            "upstream": "echo",
            "scopes": ["read"],
            "name": "slow",
        },
    ]
    defaults: dict[str, Any] = {
        "cache": {"local_ttl": f"{LOCAL_TTL:g}s"},
        "last_used": {"flush_interval": f"{FLUSH_INTERVAL:g}s"},
        "server": {"drain_timeout": "5s", "store_timeout": f"{STORE_TIMEOUT:g}s"},
        "log": {"level": "info", "format": "json", "access_log": False},
    }
    echo = {"echo": {"url": upstream_url, "connect_timeout": "2s", "timeout": "10s"}}
    sections = {"upstreams": echo, "routes": routes, **defaults, **sections}
    return gateway_config(sections.pop("upstreams"), sections.pop("routes"), **sections)


@pytest.fixture(scope="package")
def log_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="keygate-consistency-logs-"))
    yield path
    if not os.environ.get("KEYGATE_TEST_KEEP_LOGS"):  # set it to read the gateways' logs
        shutil.rmtree(path, ignore_errors=True)


# The cheapest upstream Python offers (fixed answer, low-level server): for the load test,
# so that on two cores the gateway, not the echo upstream's JSON, is what is measured.
FIXED_UPSTREAM = """
import asyncio, sys
from aiohttp import web
async def handle(request):
    return web.Response(body=b'{"ok":true}', content_type="application/json")
async def main():
    runner = web.ServerRunner(web.Server(handle, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1]), backlog=2048).start()
    await asyncio.Event().wait()
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


@pytest.fixture(scope="package")
def fixed_upstream(log_dir: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-c", FIXED_UPSTREAM, str(port)]
    up = start_listener("fixed-upstream", argv, port, log_dir)
    try:
        yield up.url
    finally:
        up.process.kill()


@dataclass
class Fleet:
    """Two `keygate serve --workers 2` instances on one PostgreSQL and one Redis."""

    stores: OwnStores
    instances: list[GatewayProcess]
    env: dict[str, str]

    @property
    def config_path(self) -> Path:
        return self.instances[0].config_path

    @property
    def admin_token(self) -> str:
        return self.env["KEYGATE_ADMIN_TOKEN"]


@pytest.fixture(scope="package")
def fleet(own_stores: OwnStores, echo_upstream: UpstreamProcess, log_dir: Path) -> Iterator[Fleet]:
    env = gateway_env(own_stores)
    started: list[GatewayProcess] = []
    try:
        for name in ("gw-a", "gw-b"):
            started.append(
                start_gateway(
                    fleet_config(echo_upstream.url), log_dir, env, name=name, workers=WORKERS
                )
            )
    except BaseException:
        for gw in started:
            gw.process.kill()
        raise
    try:
        yield Fleet(own_stores, started, env)
    except BaseException:
        for gw in started:
            gw.process.kill()
        raise
    for gw in started:
        gw.process.stop(expect_code=0)


@pytest.fixture
async def fleet_up(fleet: Fleet) -> Fleet:
    """The fleet, with every worker listening for invalidations again: a test before may
    have restarted Redis, and a worker still reconnecting (up to MAX_RECONNECT_BACKOFF)
    serves from entries that live DEGRADED_LOCAL_TTL without hearing changes."""
    for gw in fleet.instances:
        assert gw.process.alive(), gw.process.tail()
    await wait_listening(fleet.stores, WORKERS * len(fleet.instances), limit=10)
    return fleet


async def wait_listening(stores: OwnStores, workers: int, limit: float) -> None:
    """Until at least `workers` connections subscribe to the invalidation channel."""
    client = redis.Redis.from_url(stores.redis_url)
    try:
        deadline = time.monotonic() + limit
        while True:
            [(_, listening)] = client.pubsub_numsub(CHANNEL)
            if listening >= workers:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{listening} of {workers} workers subscribed after {limit}s")
            await asyncio.sleep(0.05)
    finally:
        client.close()


# ------------------------------------------------------------------------------ keys


@pytest.fixture
async def keys(fleet: Fleet) -> AsyncIterator[KeyMaker]:
    async with key_maker(fleet.config_path, fleet.env) as maker:
        yield maker


# ------------------------------------------------------------------------------ HTTP


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """Every request on a fresh connection, so SO_REUSEPORT spreads them over the workers."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0),
        timeout=aiohttp.ClientTimeout(total=20),
    ) as session:
        yield session


@dataclass(frozen=True)
class Probe:
    target: str
    sent: float  # time.time() when the request was started
    took: float
    status: int
    code: str | None


async def probe(
    http: aiohttp.ClientSession, base_url: str, secret: str, path: str = "/api/read/probe"
) -> Probe:
    started = time.time()
    async with http.get(base_url + path, headers={"Authorization": f"Bearer {secret}"}) as reply:
        code = None
        if reply.status != 200:
            body = await reply.json(content_type=None)
            code = body["error"]["code"]
        else:
            await reply.read()
        return Probe(base_url, started, time.time() - started, reply.status, code)


async def warm(
    http: aiohttp.ClientSession,
    instances: list[GatewayProcess],
    key: MadeKey,
    per_instance: int = 40,
) -> None:
    """Enough requests on fresh connections that every worker of every instance has the
    key cached (each worker is missed with probability 2**-per_instance)."""
    for gw in instances:
        probes = await asyncio.gather(
            *(probe(http, gw.url, key.secret) for _ in range(per_instance))
        )
        assert all(p.status == 200 for p in probes), [(p.status, p.code) for p in probes]


@dataclass
class Watch:
    """Probes of one key against several gateways; `since` is when the change committed
    (wall clock, as the service and PostgreSQL record it)."""

    since: float
    probes: list[Probe] = field(default_factory=list)

    def accepted(self) -> list[Probe]:
        return [p for p in self.probes if p.status == 200]

    def refused_everywhere_after(self) -> float:
        """Seconds from the change until the last request that was still accepted was sent
        (0 when none was): from then on every request was refused."""
        return max((max(0.0, p.sent - self.since) for p in self.accepted()), default=0.0)

    def after(self, seconds: float) -> list[Probe]:
        return [p for p in self.probes if p.sent - self.since > seconds]


async def watch(
    http: aiohttp.ClientSession,
    urls: list[str],
    secret: str,
    *,
    since: float,
    until: float,
    concurrency: int = 4,
    path: str = "/api/read/probe",
) -> Watch:
    """Probe every URL with `concurrency` fresh connections at a time until `until`
    seconds after `since` (wall clock)."""
    result = Watch(since)
    while time.time() - since < until:
        batch = await asyncio.gather(
            *(probe(http, url, secret, path) for url in urls for _ in range(concurrency))
        )
        result.probes.extend(batch)
    return result


async def probe_while(
    http: aiohttp.ClientSession,
    urls: list[str],
    secret: str,
    done: asyncio.Event,
    concurrency: int = 4,
) -> list[Probe]:
    """Probe every URL until `done` is set (to watch across a change whose commit time
    is read afterwards)."""
    probes: list[Probe] = []
    while not done.is_set():
        probes.extend(
            await asyncio.gather(
                *(probe(http, url, secret) for url in urls for _ in range(concurrency))
            )
        )
    return probes


async def readyz(http: aiohttp.ClientSession, gw: GatewayProcess) -> tuple[int, Any]:
    """/readyz's status and body."""
    async with http.get(gw.admin_url + "/readyz") as reply:
        return reply.status, await reply.json()


async def wait_store(
    http: aiohttp.ClientSession, gw: GatewayProcess, store: str, state: str, limit: float
) -> float:
    """Seconds until /readyz reports `store` ("postgres", "redis") `state` ("up", "down"),
    polled every 50 ms for at most `limit`. Every answer meanwhile must be 200 "ready": a
    store outage alone never takes an instance out of service (SPEC §9)."""
    started = time.monotonic()
    while True:
        status, body = await readyz(http, gw)
        assert (status, body["status"]) == (200, "ready"), (gw.admin_url, status, body)
        if body["stores"][store] == state:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise AssertionError(
                f"{gw.admin_url}/readyz: {store} still not {state} after {limit}s: {body}"
            )
        await asyncio.sleep(0.05)


class Launcher:
    """Starts extra gateways for one test; whatever is still running at the end is killed
    (a test that checks a clean exit stops its gateways itself)."""

    def __init__(self, stores: OwnStores, upstream: UpstreamProcess, log_dir: Path) -> None:
        self.stores = stores
        self.upstream = upstream
        self.log_dir = log_dir
        self.started: list[GatewayProcess] = []

    def __call__(
        self, name: str, *, workers: int = 2, env: dict[str, str] | None = None, **overrides: Any
    ) -> GatewayProcess:
        gw = start_gateway(
            fleet_config(self.upstream.url, **overrides),
            self.log_dir,
            env or gateway_env(self.stores),
            name=name,
            workers=workers,
        )
        self.started.append(gw)
        return gw

    def cleanup(self) -> None:
        for gw in self.started:
            gw.process.kill()


@pytest.fixture
def launch(
    own_stores: OwnStores, echo_upstream: UpstreamProcess, log_dir: Path
) -> Iterator[Launcher]:
    launcher = Launcher(own_stores, echo_upstream, log_dir)
    try:
        yield launcher
    finally:
        launcher.cleanup()
