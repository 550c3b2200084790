"""WebSocket relay: after the upgrade is authenticated, frames pass both ways until a close.

Open sessions are registered by key id so a revoked or expired key's sessions can be
closed with 1008 (policy violation).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from gateway.auth.token_claims import UserIdentity
from gateway.proxy.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.proxy.responses import SERVER_NAME
from gateway.proxy.upstreams import Upstream
from gateway.proxy.ws_sessions import Ending, RouteNeed, WebSocketSessions

# Set by aiohttp's ws_connect itself (Host included: from the upstream's URL).
# Lower-case, compared with `name.lower()`: field names are case-insensitive.
_HANDSHAKE = frozenset(
    (
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "content-length",
        "host",
    )
)
AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def relay_websocket(
    request: web.BaseRequest,
    upstream: Upstream,
    path: str,
    query: str,
    headers: CIMultiDict[str],
    sessions: WebSocketSessions,
    key_id: str | None,
    max_message: int,
    need: RouteNeed | None = None,
    user: UserIdentity | None = None,
) -> web.WebSocketResponse:
    """Connect upstream first (so its failure is a clean 502/504), then accept the client.

    The handshake was validated before (framing.check_websocket_handshake). Messages over
    `max_message` bytes close the session with 1009 on either side; permessage-deflate is
    neither offered upstream nor accepted from the client, so a message's size on the wire
    is its size in memory. `need` (what the route requires of the key) is registered with
    the session, so a key that loses a scope or org the route needs is closed with 1008;
    a user token's session (`user`) ends when the token expires or is revoked.
    """
    protocols = [
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in value.split(",")
        if p.strip()
    ]
    up_headers = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _HANDSHAKE)
    try:
        up = await upstream.session.ws_connect(
            upstream.ws_url(path, query),
            headers=up_headers,
            protocols=protocols,
            autoclose=False,
            autoping=False,
            max_msg_size=max_message,
            compress=0,
        )
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout() from None
    except aiohttp.ClientError:
        raise UpstreamUnavailable() from None
    down = web.WebSocketResponse(
        protocols=(up.protocol,) if up.protocol else (),
        autoclose=False,
        autoping=False,
        max_msg_size=max_message,
        compress=False,
    )
    down.headers["X-Request-Id"] = headers["X-Request-Id"]
    down.headers["Server"] = SERVER_NAME
    try:
        await down.prepare(request)
    except BaseException:
        await up.close()
        raise
    ended = sessions.add(key_id, down, need, user)  # a public route's too: for `going_away`
    try:
        await _pump_both(down, up, ended)
    except BaseException:
        # The 101 is out: no status can follow. Cut the connection; the handler logs.
        if request.transport is not None:
            request.transport.abort()
        raise
    finally:
        sessions.remove(key_id, down)
        await up.close()
    return down


async def _pump_both(
    down: web.WebSocketResponse,
    up: aiohttp.ClientWebSocketResponse,
    ended: asyncio.Future[Ending] | None,
) -> None:
    """Relay until either side closes, or until `ended` says the session must end (its
    key no longer may, or the worker is going away)."""
    to_up = asyncio.create_task(_pump(down, up))
    to_down = asyncio.create_task(_pump(up, down))
    pumps = {to_up, to_down}
    watched: set[asyncio.Future[Any]] = {*pumps, *([ended] if ended is not None else [])}
    try:
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        to_up.cancel()
        to_down.cancel()
        raise
    for task in pumps - done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if ended is not None and ended in done and not pumps & done:
        # Nobody else reads the sockets now: close() sends the code and waits for the
        # client's close frame (bounded by the response's timeout) before the
        # connection ends, so the client sees the code, not an abnormal closure.
        ending = ended.result()
        reason = ending.reason.encode()[:123]  # a control frame holds 125 bytes
        await down.close(code=ending.code, message=reason)
        await up.close(code=ending.code, message=reason)
        return
    for task in pumps & done:
        task.result()


async def _pump(src: AnyWebSocket, dst: AnyWebSocket) -> None:
    """Copy frames from `src` to `dst`; on a close, pass its code on and finish."""
    while True:
        msg = await src.receive()
        if msg.type == WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type == WSMsgType.PING:
            await dst.ping(msg.data)
        elif msg.type == WSMsgType.PONG:
            await dst.pong(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            code = msg.data if isinstance(msg.data, int) else 1000
            reason = (msg.extra or "").encode()
            await dst.close(code=code, message=reason)
            await src.close(code=code, message=reason)
            return
        else:  # CLOSING, CLOSED, ERROR: the peer is gone without a close frame
            await dst.close(code=src.close_code or 1011)
            return
