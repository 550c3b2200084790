"""Failure class 4 (HTTP and WebSocket parts): slow heads, stalled bodies and oversized or
compressed WebSocket messages cannot hold a connection or the gateway's memory."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp

from tests.integration.boundary.rawhttp import (
    closed_within,
    dripped_head_closed,
    open_raw,
    responses_until_close,
)
from tests.integration.boundary.recorded import (
    BODY_IDLE_TIMEOUT,
    HEADER_TIMEOUT,
    MAX_MESSAGE,
    Recorded,
)
from tests.integration.proxy.harness import raw_error
from tests.integration.proxy.wire import close_writer, read_response, request_bytes

SLACK = 2.0


async def test_connection_that_sends_nothing_is_closed(gw: Recorded) -> None:
    reader, writer = await open_raw(gw.port)
    try:
        assert await closed_within(reader, HEADER_TIMEOUT + SLACK)
    finally:
        await close_writer(writer)


async def test_slowly_dripped_head_is_cut_off(gw: Recorded) -> None:
    reader, writer = await open_raw(gw.port)
    started = time.monotonic()
    try:
        first = b"GET /raw/slow HTTP/1.1\r\nHost: x\r\n"
        assert await dripped_head_closed(reader, writer, first, lines=40)
        assert time.monotonic() - started < HEADER_TIMEOUT + SLACK
    finally:
        await close_writer(writer)
    assert gw.upstream.snapshot() == ([], [])


async def test_idle_keep_alive_connection_outlives_the_head_timeout(gw: Recorded) -> None:
    reader, writer = await open_raw(gw.port)
    try:
        writer.write(request_bytes("GET", "/raw/first"))
        await writer.drain()
        assert (await asyncio.wait_for(read_response(reader), 5)).status == 200
        await asyncio.sleep(HEADER_TIMEOUT + 0.5)  # idle: keepalive_timeout applies
        writer.write(request_bytes("GET", "/raw/second"))
        await writer.drain()
        assert (await asyncio.wait_for(read_response(reader), 5)).status == 200
    finally:
        await close_writer(writer)


async def test_stalled_chunked_body_is_408_and_closed(gw: Recorded) -> None:
    reader, writer = await open_raw(gw.port)
    started = time.monotonic()
    try:
        writer.write(
            request_bytes(
                "POST", "/echo/stall", [("Transfer-Encoding", "chunked")], b"5\r\nhello\r\n"
            )
        )
        await writer.drain()
        replies, closed = await responses_until_close(reader, wait=BODY_IDLE_TIMEOUT + 5)
    finally:
        await close_writer(writer)
    assert replies, "no answer to a stalled body"
    raw_error(replies[0], 408, "invalid_request")
    assert closed
    assert time.monotonic() - started < BODY_IDLE_TIMEOUT + SLACK + 1


async def test_websocket_message_over_max_message_closes_with_1009(gw: Recorded) -> None:
    before = gw.gateway.process.rss_bytes()
    big = b"\0" * (64 * 1024 * 1024)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{gw.port}/ws/big", max_msg_size=0) as ws,
    ):
        await ws.send_bytes(b"x" * (MAX_MESSAGE // 2))  # under the limit: relayed
        echoed = await ws.receive(timeout=5)
        assert echoed.type == aiohttp.WSMsgType.BINARY and len(echoed.data) == MAX_MESSAGE // 2
        # The gateway may close while the frame is still being written.
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await ws.send_bytes(big)
        closing = await ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE, closing
        assert closing.data == 1009, closing
    grown = gw.gateway.process.rss_bytes() - before
    assert grown < 32 * 1024 * 1024, f"gateway RSS grew by {grown / 2**20:.0f} MiB"


async def test_permessage_deflate_offer_is_not_accepted(gw: Recorded) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{gw.port}/ws/deflate", compress=15) as ws,
    ):
        assert ws.compress == 0
        assert "Sec-WebSocket-Extensions" not in ws._response.headers
        await ws.send_str("plain")
        reply = await ws.receive(timeout=5)
        assert reply.data == "plain"
