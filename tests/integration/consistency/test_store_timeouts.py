"""A hung store cannot hang requests (issue 4): every store call has a timeout.

The "hung store" is a TCP listener that accepts connections and never answers, put in
place of Redis or of PostgreSQL: connecting succeeds, every reply is awaited in vain.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.integration.consistency.conftest import STORE_TIMEOUT, Launcher, OwnStores, probe
from tests.support.configs import gateway_env
from tests.support.keys import KeyMaker

# A cold key may wait on Redis twice (read, then fill) before PostgreSQL answers.
BOUND = 2 * STORE_TIMEOUT + 1.5


class SilentListener:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentListener]:
    listener = SilentListener()
    try:
        yield listener
    finally:
        listener.close()


async def test_hung_redis_requests_still_answered_from_postgres(
    own_stores: OwnStores,
    launch: Launcher,
    keys: KeyMaker,
    http: aiohttp.ClientSession,
    silent: SilentListener,
) -> None:
    env = gateway_env(own_stores, KEYGATE_REDIS_URL=f"redis://127.0.0.1:{silent.port}/0")
    gw = launch("gw-hung-redis", workers=1, env=env)
    key, revoked = await keys.key(), await keys.key()
    await keys.revoke(revoked.id)

    first = await probe(http, gw.url, key.secret)  # in no cache: Redis hangs, PostgreSQL answers
    again = await asyncio.gather(*(probe(http, gw.url, key.secret) for _ in range(5)))
    refused = await probe(http, gw.url, revoked.secret)
    started = time.monotonic()
    async with http.get(gw.admin_url + "/readyz") as reply:
        ready, body = reply.status, await reply.json()
    readyz_took = time.monotonic() - started
    print(
        f"hung Redis: first request {first.took * 1000:.0f} ms, cached "
        f"{max(p.took for p in again) * 1000:.0f} ms max, revoked key "
        f"{refused.took * 1000:.0f} ms, /readyz {ready} in {readyz_took * 1000:.0f} ms"
    )
    assert first.status == 200 and first.took < BOUND
    assert {p.status for p in again} == {200} and max(p.took for p in again) < BOUND
    assert (refused.status, refused.code) == (401, "revoked_api_key") and refused.took < BOUND
    # Still ready (it serves from PostgreSQL), Redis reported down, the ping bounded.
    assert ready == 200 and body["stores"] == {"postgres": "up", "redis": "down"}, body
    assert readyz_took < BOUND
    gw.process.stop(expect_code=0)


async def test_hung_postgres_uncached_key_gets_503_in_bounded_time(
    own_stores: OwnStores,
    launch: Launcher,
    keys: KeyMaker,
    http: aiohttp.ClientSession,
    silent: SilentListener,
) -> None:
    env = gateway_env(
        own_stores, KEYGATE_DATABASE_URL=f"postgresql://keygate@127.0.0.1:{silent.port}/keygate"
    )
    gw = launch("gw-hung-pg", workers=1, env=env)
    key = await keys.key()  # created in the real database, never seen by this gateway

    results = await asyncio.gather(*(probe(http, gw.url, key.secret) for _ in range(3)))
    print(
        "hung PostgreSQL: uncached key answered "
        + ", ".join(f"{p.status} in {p.took * 1000:.0f} ms" for p in results)
    )
    for p in results:
        assert (p.status, p.code) == (503, "auth_unavailable")
        assert p.took < BOUND
    gw.process.stop(expect_code=0)
