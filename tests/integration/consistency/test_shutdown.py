"""Graceful shutdown (issue 4): on SIGTERM `keygate serve` stops accepting at once, lets
the request in flight finish, and exits 0."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import aiohttp

from tests.integration.consistency.conftest import Launcher, probe
from tests.support.keys import KeyMaker

SLOW = 2.0  # seconds the upstream takes to answer the in-flight request


def connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


async def test_sigterm_lets_the_slow_request_finish_and_refuses_new_connections(
    launch: Launcher, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    gw = launch("gw-drain", workers=2)
    key = await keys.key()
    assert (await probe(http, gw.url, key.secret)).status == 200

    in_flight = asyncio.create_task(
        probe(http, gw.url, key.secret, path=f"/_demo/slow?seconds={SLOW:g}")
    )
    await asyncio.sleep(0.5)  # the request is now waiting on the upstream
    assert not in_flight.done()
    gw.process.proc.send_signal(signal.SIGTERM)
    terminated = time.monotonic()

    # New connections are refused from (almost) the moment of SIGTERM, while the slow
    # request is still being served.
    attempts: list[tuple[float, bool]] = []
    while not in_flight.done():
        refused = await asyncio.to_thread(connection_refused, gw.proxy_port)
        attempts.append((time.monotonic() - terminated, refused))
        await asyncio.sleep(0.05)
    slow = await in_flight
    exit_code = await asyncio.to_thread(gw.process.proc.wait, 20)
    stopped = time.monotonic() - terminated
    first_refused = next((at for at, refused in attempts if refused), None)
    print(
        f"SIGTERM: new connections refused after {(first_refused or 0) * 1000:.0f} ms; the "
        f"in-flight request answered {slow.status} after {slow.took:.2f} s; exit code "
        f"{exit_code} {stopped:.2f} s after SIGTERM"
    )

    assert slow.status == 200 and slow.took >= SLOW
    assert first_refused is not None and first_refused < 0.5, attempts
    assert all(refused for at, refused in attempts if at >= first_refused), attempts
    assert exit_code == 0, gw.process.tail()
    gw.process.stop(expect_code=0)
    assert "Traceback" not in gw.process.output(), gw.process.tail()
