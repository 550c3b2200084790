"""The PostgreSQL invalidation channel attacked from outside (issue 11 §1).

- A flood: one statement bumps 50,000 keys' versions, so PostgreSQL NOTIFYs 50,000 times
  to every worker. Valid traffic keeps flowing, a real revocation queued behind the flood
  still lands within the bound, and no worker's memory grows without bound.
- A hung PostgreSQL: the network path to it turns into a black hole (connections stay
  open, nothing answers). /readyz stays bounded and 200, cached keys are served, a key in
  no cache gets 503 within the store timeout, and SIGTERM still exits 0 promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import aiohttp
import redis

from tests.integration.consistency.conftest import (
    STORE_TIMEOUT,
    WORKERS,
    Fleet,
    Launcher,
    OwnStores,
    probe,
    readyz,
    wait_listening,
    warm,
    watch,
)
from tests.integration.consistency.test_postgres_channel import (
    BOUND,
    HOLD,
    assert_refused_within_bound,
    wait_pg_listeners,
)
from tests.support.configs import gateway_env
from tests.support.gateway_process import GatewayProcess
from tests.support.keys import KeyMaker

FLOOD = 50_000


def workers_rss(gw: GatewayProcess) -> list[int]:
    """Resident set size of each worker process of `gw` (its children), in bytes."""
    children = Path(f"/proc/{gw.process.pid}/task/{gw.process.pid}/children").read_text()
    sizes = []
    for pid in children.split():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) * 1024)
    return sizes


async def test_a_bulk_change_of_50k_keys_neither_stalls_traffic_nor_delays_a_revocation(
    fleet_up: Fleet, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    stores = fleet_up.stores
    urls = [gw.url for gw in fleet_up.instances]
    valid, revoked = await keys.key(), await keys.key()
    await warm(http, fleet_up.instances, valid)
    await warm(http, fleet_up.instances, revoked)
    await wait_pg_listeners(stores, WORKERS * len(fleet_up.instances))
    # 50,000 copies of a real row, ids Z0000001…: inserting announces each new key, and
    # the UPDATE below each of them again, 100,000 changes. Announced per statement
    # (migration 0007: ~250 notifications per statement); one notification per row made
    # each worker's event loop stall for over a second inside the driver.
    await stores.fetch(
        """INSERT INTO api_keys (id, org, name, prefix, env, secret_hash, scopes,
                                 created_at, created_by)
           SELECT 'Z' || lpad(n::text, 7, '0'), org, name, prefix, env, secret_hash, scopes,
                  created_at, created_by
           FROM api_keys, generate_series(1, $2) AS n WHERE id = $1""",
        valid.id,
        FLOOD,
    )
    try:
        rss_before = [size for gw in fleet_up.instances for size in workers_rss(gw)]
        flooded = time.time()
        await stores.fetch("UPDATE api_keys SET version = version + 1 WHERE id LIKE 'Z%'")
        # Right behind the flood: a revocation that only PostgreSQL announces to the
        # workers still digesting it (the revoker reaches Redis: both channels carry it).
        await keys.revoke(revoked.id)
        returned = time.time()
        during = await asyncio.gather(*(probe(http, url, valid.secret) for url in urls * 20))
        seen = await watch(http, urls, revoked.secret, since=returned, until=BOUND + HOLD)
        rss_after = [size for gw in fleet_up.instances for size in workers_rss(gw)]
    finally:
        await stores.fetch("DELETE FROM api_keys WHERE id LIKE 'Z%'")
    slowest = max(p.took for p in during)
    grown = max(after - before for before, after in zip(rss_before, rss_after, strict=True))
    print(
        f"{FLOOD} keys changed by one statement, heard by {len(rss_before)} workers:"
        f" valid key served ({len(during)} requests,"
        f" slowest {slowest * 1000:.0f} ms, flood began {(returned - flooded) * 1000:.0f} ms"
        f" before); worker RSS grew at most {grown / 2**20:.1f} MiB"
    )
    assert {p.status for p in during} == {200}, [(p.status, p.code) for p in during][:8]
    assert slowest < 1.0, slowest
    assert_refused_within_bound(seen, urls, f"revocation behind {FLOOD} notifications")
    # The marks table is bounded by cache.max_entries; 50k tiny entries must not show up
    # as tens of MiB per worker.
    assert grown < 32 * 2**20, (rss_before, rss_after)


class BlackHole:
    """A TCP relay to PostgreSQL that can turn silent: connections stay open, bytes stop
    flowing both ways (a partition, a frozen host), new connections are accepted and
    never answered."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    def go_silent(self) -> None:
        self.silent = True
        self._flowing.clear()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.silent:
            return  # accepted, never answered
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.append(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                await self._flowing.wait()  # once silent, held: the peer hears nothing
                dst.write(data)
                await dst.drain()
        dst.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_hung_postgres_blocks_nothing_and_sigterm_still_exits_promptly(
    own_stores: OwnStores, keys: KeyMaker, http: aiohttp.ClientSession, launch: Launcher
) -> None:
    hole = BlackHole(own_stores.pg.port)
    await hole.start()
    try:
        database_url = own_stores.database_url.replace(f":{own_stores.pg.port}/", f":{hole.port}/")
        assert database_url != own_stores.database_url
        # In a thread: starting blocks, and this loop must keep relaying meanwhile.
        env = gateway_env(own_stores, database_url=database_url)
        gw = await asyncio.to_thread(launch, "gw-pg-hung", workers=2, env=env)
        # Both workers subscribed, then a moment for the re-sync each makes right after
        # (one query): only then does a worker trust Redis, and a worker that does not
        # would ask the hung PostgreSQL below (503, by design) instead of Redis.
        await wait_listening(own_stores, 2, 20)
        await asyncio.sleep(1.0)
        cached, uncached = await keys.key(), await keys.key()
        # Until a worker has re-synced Redis it does not fill it: warm until Redis holds
        # the key's verifier, so that the key is cached in every tier but PostgreSQL.
        entry = redis.Redis.from_url(own_stores.redis_url)
        try:
            deadline = time.monotonic() + 10
            while True:
                await warm(http, [gw], cached)
                if entry.hlen(f"keygate:key:{cached.id}") >= 3:  # version, state, verifier
                    break
                assert time.monotonic() < deadline, "the gateway never filled Redis"
                await asyncio.sleep(0.2)
        finally:
            entry.close()
        hole.go_silent()
        hung = time.monotonic()
        answers = []
        while time.monotonic() - hung < 4.0:  # past the LISTEN keepalive (2 s + timeout)
            started = time.monotonic()
            status, body = await readyz(http, gw)
            answers.append((status, body["status"], body["stores"], time.monotonic() - started))
            served = await probe(http, gw.url, cached.secret)
            assert served.status == 200, (served.status, served.code)
        refused = await probe(http, gw.url, uncached.secret)
        gw.process.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await asyncio.to_thread(gw.process.proc.wait, 30)
        exited = time.monotonic() - signalled
    finally:
        await hole.close()
    print(
        f"PostgreSQL hung: /readyz slowest {max(a[3] for a in answers) * 1000:.0f} ms over"
        f" {len(answers)} probes; uncached key {refused.status} {refused.code} after"
        f" {refused.took * 1000:.0f} ms; SIGTERM: exit {code} after {exited:.2f} s"
    )
    assert all(status == 200 and phase == "ready" for status, phase, _, _ in answers), answers
    assert max(took for *_, took in answers) < 1.0, answers
    assert answers[-1][2] == {"postgres": "down", "redis": "up"}, answers[-1]
    assert (refused.status, refused.code) == (503, "auth_unavailable")
    assert refused.took < 2 * STORE_TIMEOUT + 1.0, refused.took
    assert code == 0, gw.process.tail()
    assert exited < 10.0, exited
    # asyncpg's own pool logger adds a traceback to its floor-restoring retries; every
    # line of ours must be free of one.
    ours = [line for line in gw.process.output().splitlines() if '"asyncpg.pool"' not in line]
    assert not [line for line in ours if "Traceback" in line], gw.process.tail()
