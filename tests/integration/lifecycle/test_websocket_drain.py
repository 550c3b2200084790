"""WebSocket sessions at the edges of their life, attacked from outside (issue 11).

- SIGTERM with sessions open: once the listener closes (after `server.drain_delay`) each
  session is told to go away with 1001 (RFC 6455 §7.4.1: "an endpoint is going away, such
  as a server going down"), so its client reconnects to an instance that stays. Left
  alone, a session would hold the worker for the whole `drain_timeout` and then be cut
  without a close frame (1006), which clients treat as a failure.
- A client that never answers the 1008 close frame of its revoked key: the relay gives
  it the close timeout, then frees the connection (it does not hold it forever).
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
from pathlib import Path

import aiohttp

from tests.integration.consistency.conftest import fleet_config
from tests.integration.lifecycle.conftest import OwnStores
from tests.support.configs import gateway_env
from tests.support.gateway_process import UpstreamProcess, start_gateway
from tests.support.keys import key_maker

DRAIN_DELAY = 0.5
DRAIN_TIMEOUT = 10.0  # far above what a going-away close takes: the test tells them apart
GOING_AWAY = 1001


async def test_sigterm_tells_open_websocket_sessions_to_go_away(
    own_stores: OwnStores, echo_upstream: UpstreamProcess, log_dir: Path
) -> None:
    gw = start_gateway(
        fleet_config(
            echo_upstream.url,
            server={
                "drain_delay": f"{DRAIN_DELAY:g}s",
                "drain_timeout": f"{DRAIN_TIMEOUT:g}s",
                "store_timeout": "1s",
            },
        ),
        log_dir,
        gateway_env(own_stores),
        name="gw-ws-drain",
        workers=2,
    )
    try:
        async with key_maker(gw.config_path, gw.env) as keys:
            key = await keys.key(["read"])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            sockets = [
                await http.ws_connect(gw.url + "/ws/events", headers=key.auth) for _ in range(6)
            ]
            for ws in sockets:  # every session relays before the signal
                await ws.send_str("hello")
                assert (await ws.receive(timeout=5)).data == "hello"
            gw.process.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # During the delay the sessions still relay.
            for ws in sockets:
                await ws.send_str("still here")
                assert (await ws.receive(timeout=5)).data == "still here"

            async def ended(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, float]:
                msg = await ws.receive(timeout=2 * DRAIN_TIMEOUT + 10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
                return ws.close_code, time.monotonic() - signalled

            closes = await asyncio.gather(*(ended(ws) for ws in sockets))
            for ws in sockets:
                await ws.close()
        code = await asyncio.to_thread(gw.process.proc.wait, 2 * DRAIN_TIMEOUT + 30)
        exited = time.monotonic() - signalled
    except BaseException:
        gw.process.kill()
        raise
    gw.process.stop(expect_code=0)
    print(
        f"SIGTERM with {len(sockets)} websockets open: closed with "
        f"{ {c for c, _ in closes} } after {max(t for _, t in closes):.2f} s; exit {code}"
        f" after {exited:.2f} s (drain_delay {DRAIN_DELAY:g}s, drain_timeout {DRAIN_TIMEOUT:g}s)"
    )
    assert {c for c, _ in closes} == {GOING_AWAY}, closes
    assert max(t for _, t in closes) < DRAIN_DELAY + 2.0, closes
    assert code == 0, gw.process.tail()
    assert exited < DRAIN_DELAY + 4.0, exited
    assert "Traceback" not in gw.process.output(), gw.process.tail()


async def _raw_websocket(
    port: int, path: str, auth: dict[str, str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand: after the 101, this client reads but never answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nonce = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in auth.items())
        + "\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert status.startswith(b"HTTP/1.1 101"), status
    return reader, writer


CLOSE_TIMEOUT = 10.0  # aiohttp's WebSocketResponse default: the wait for the client's close


async def test_client_that_never_answers_the_1008_close_is_freed_within_the_close_timeout(
    own_stores: OwnStores, echo_upstream: UpstreamProcess, log_dir: Path
) -> None:
    gw = start_gateway(
        fleet_config(echo_upstream.url), log_dir, gateway_env(own_stores), name="gw-ws-mute"
    )
    try:
        async with key_maker(gw.config_path, gw.env) as keys:
            key = await keys.key(["read"])
            reader, writer = await _raw_websocket(gw.proxy_port, "/ws/mute", key.auth)
            try:
                await keys.revoke(key.id)
                revoked = time.monotonic()
                received = b""
                # Read (never answer) until the gateway closes the TCP connection.
                while chunk := await asyncio.wait_for(reader.read(4096), CLOSE_TIMEOUT + 10):
                    received += chunk
                freed = time.monotonic() - revoked
            finally:
                writer.close()
    except BaseException:
        gw.process.kill()
        raise
    gw.process.stop(expect_code=0)
    # The server's close frame: FIN + opcode 8, unmasked, payload = 2-byte code + reason.
    assert received[:1] == b"\x88", received[:16]
    assert int.from_bytes(received[2:4], "big") == 1008, received[:16]
    print(f"client never answering the 1008 close: connection freed after {freed:.2f} s")
    assert freed < CLOSE_TIMEOUT + 2.0, freed
    assert "Traceback" not in gw.process.output(), gw.process.tail()
