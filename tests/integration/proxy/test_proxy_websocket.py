"""WebSocket routes: an authenticated upgrade, then frames and close codes both ways."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.integration.proxy.harness import Stack
from tests.support.gateway_process import GatewayProcess
from tests.support.keys import ACTOR, KeyMaker


def ws_url(gateway: GatewayProcess, path: str) -> str:
    return gateway.url.replace("http://", "ws://") + path


async def test_websocket_conversation(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["events"])
    async with http.ws_connect(
        ws_url(gateway, "/ws/chat?room=1"), headers=key.auth, autoping=False, protocols=("chat",)
    ) as ws:
        assert ws.protocol == "chat"  # the upstream's choice reaches the client
        await ws.send_str("hello")
        msg = await ws.receive(5)
        assert (msg.type, msg.data) == (WSMsgType.TEXT, "hello")

        payload = bytes(range(256)) * 300  # larger than one TCP segment
        await ws.send_bytes(payload)
        msg = await ws.receive(5)
        assert (msg.type, msg.data) == (WSMsgType.BINARY, payload)

        await ws.ping(b"are-you-there")
        msg = await ws.receive(5)
        assert (msg.type, msg.data) == (WSMsgType.PONG, b"are-you-there")

        for i in range(20):
            await ws.send_str(f"n{i}")
        got = [(await ws.receive(5)).data for _ in range(20)]
        assert got == [f"n{i}" for i in range(20)]

        await ws.send_str("close:4001")
        msg = await ws.receive(5)
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 4001
        assert msg.extra == "asked to close"


async def test_client_close_code_reaches_the_upstream(
    stack: Stack, gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    probe = stack.probe
    probe.ws_closed.clear()
    before = len(probe.ws_close_codes)
    async with http.ws_connect(ws_url(gateway, "/probe/ws"), headers=key.auth) as ws:
        await ws.send_str("ping")
        assert (await ws.receive(5)).data == "ping"
        await ws.close(code=4002, message=b"client done")
    assert await asyncio.to_thread(probe.ws_closed.wait, 5)
    assert probe.ws_close_codes[before:] == [4002]


@pytest.mark.parametrize(("scopes", "status"), [(None, 401), (["read"], 403)])
async def test_upgrade_is_authenticated(
    gateway: GatewayProcess,
    http: aiohttp.ClientSession,
    keys: KeyMaker,
    scopes: list[str] | None,
    status: int,
) -> None:
    headers = (await keys.key(scopes)).auth if scopes else {}
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        async with http.ws_connect(ws_url(gateway, "/ws/chat"), headers=headers):
            pass
    assert caught.value.status == status
    assert caught.value.headers is not None
    assert "WWW-Authenticate" in caught.value.headers


async def test_upgrade_with_bad_key_is_401(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["events"])
    # Another last character (a key ending in "x" would be itself: 1 run in 62 failed).
    wrong = key.secret[:-1] + ("x" if key.secret[-1] != "x" else "y")
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        async with http.ws_connect(
            ws_url(gateway, "/ws/chat"), headers={"Authorization": f"Bearer {wrong}"}
        ):
            pass
    assert caught.value.status == 401


async def test_revoking_the_key_closes_its_sessions_with_1008(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["events"])
    bystander = await keys.key(["events"])
    async with (
        http.ws_connect(ws_url(gateway, "/ws/a"), headers=key.auth) as ws,
        http.ws_connect(ws_url(gateway, "/ws/b"), headers=bystander.auth) as other,
    ):
        await ws.send_str("x")
        assert (await ws.receive(5)).data == "x"
        revoked_at = time.monotonic()
        await keys.revoke(key.id)
        msg = await ws.receive(5)
        elapsed = time.monotonic() - revoked_at
        print(f"websocket closed {elapsed * 1000:.0f} ms after revocation")
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 1008
        assert elapsed < 1.5
        # Another key's session is untouched.
        await other.send_str("still here")
        assert (await other.receive(5)).data == "still here"


async def test_losing_a_scope_the_route_needs_closes_its_sessions_with_1008(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    losing = await keys.key(["events", "read"])
    keeping = await keys.key(["events", "read"])
    async with (
        http.ws_connect(ws_url(gateway, "/ws/scope"), headers=losing.auth) as ws,
        http.ws_connect(ws_url(gateway, "/ws/scope2"), headers=keeping.auth) as other,
    ):
        await ws.send_str("x")
        assert (await ws.receive(5)).data == "x"
        # A change that keeps what the route needs leaves the session open…
        await keys.service.update_key(ACTOR, keeping.id, scopes=["events"])
        # …one that takes the route's scope away closes it, within the revocation bound.
        changed_at = time.monotonic()
        await keys.service.update_key(ACTOR, losing.id, scopes=["read"])
        msg = await ws.receive(5)
        elapsed = time.monotonic() - changed_at
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 1008
        assert elapsed < 1.5
        await other.send_str("still here")
        assert (await other.receive(5)).data == "still here"


async def test_expiry_closes_sessions_with_1008(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["events"], expires_in=1.5)
    assert key.expires_at is not None
    async with http.ws_connect(ws_url(gateway, "/ws/exp"), headers=key.auth) as ws:
        msg = await ws.receive(6)
        late = time.time() - key.expires_at.timestamp()
        print(f"websocket closed {late * 1000:.0f} ms after expiry")
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 1008
        assert -0.1 < late < 1.5
