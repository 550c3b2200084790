"""Open WebSocket sessions are re-authorised against their key's new state: revoked,
expired, a scope or the org their route needs gone -> closed with 1008; others stay."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.keys.state import KeyState
from gateway.proxy.ws_sessions import POLICY_VIOLATION, RouteNeed, WebSocketSessions

NOW = 2_000_000_000.0


def state(**changes: Any) -> KeyState:
    base = KeyState("a1B2c3D4", "acme", "kg_live_", "live", ("events", "read"), None, False, 1)
    return dataclasses.replace(base, **changes)


NEEDS = {
    "events": RouteNeed(("events",)),
    "read-org": RouteNeed(("read",), "org", {"org": "acme"}),
    "none": None,  # registered without a requirement: revocation and expiry only
}


@pytest.mark.parametrize(
    ("new_state", "closed"),
    [
        (state(version=2), set()),
        (state(version=2, revoked=True), {"events", "read-org", "none"}),
        (state(version=2, expires_at=NOW - 1), {"events", "read-org", "none"}),
        (state(version=2, expires_at=NOW + 60), set()),
        (state(version=2, scopes=("read",)), {"events"}),
        (state(version=2, scopes=("events",)), {"read-org"}),
        (state(version=2, scopes=("*",)), set()),
        (state(version=2, org="other"), {"read-org"}),
    ],
)
async def test_sessions_the_new_state_no_longer_authorises_are_closed_with_1008(
    aiohttp_client: Callable[..., Awaitable[Any]], new_state: KeyState, closed: set[str]
) -> None:
    sessions = WebSocketSessions()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        ended = sessions.add("a1B2c3D4", ws, NEEDS[request.query["need"]])
        reading: asyncio.Future[Any] = asyncio.ensure_future(ws.receive())  # the client's close
        try:
            # As the relay does: the owner of the socket closes it with the reason given.
            await asyncio.wait([ended, reading], return_when=asyncio.FIRST_COMPLETED)
            if ended.done():
                reading.cancel()
                await ws.close(code=POLICY_VIOLATION, message=ended.result().reason.encode())
        finally:
            sessions.remove("a1B2c3D4", ws)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    client = await aiohttp_client(app)
    sockets = {name: await client.ws_connect(f"/ws?need={name}") for name in NEEDS}
    for _ in range(500):
        if len(sessions) == len(NEEDS):
            break
        await asyncio.sleep(0.01)
    assert await sessions.enforce(new_state, NOW) == len(closed)
    for name, ws in sockets.items():
        if name in closed:
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == POLICY_VIOLATION and msg.data == POLICY_VIOLATION
        else:
            assert not ws.closed
        await ws.close()
