"""Failure class 3: fragments, CONNECT, malformed WebSocket handshakes, oversized header
sections and `100 Continue` are refused before anything reaches the upstream."""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.integration.boundary.rawhttp import exchange_all
from tests.integration.boundary.recorded import BODY_IDLE_TIMEOUT, Recorded
from tests.integration.proxy.harness import raw_error
from tests.integration.proxy.wire import (
    close_writer,
    read_head,
    read_response,
    request_bytes,
)
from tests.support.keys import KeyMaker

KEY = base64.b64encode(b"0123456789abcdef").decode()
HANDSHAKE = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def replaced(headers: list[tuple[str, str]], name: str, value: str | None) -> list[tuple[str, str]]:
    kept = [(k, v) for k, v in headers if k.lower() != name.lower()]
    return kept if value is None else [*kept, (name, value)]


async def test_fragment_in_target_is_400(gw: Recorded) -> None:
    replies, _ = await exchange_all(gw.port, request_bytes("GET", "/raw/a#/../admin"), wait=3)
    raw_error(replies[0], 400, "invalid_request")
    await asyncio.sleep(0.2)
    assert gw.upstream.snapshot() == ([], [])


async def test_connect_is_400_and_the_connection_closes(gw: Recorded) -> None:
    data = request_bytes("CONNECT", "127.0.0.1:22") + request_bytes("GET", "/raw/after-connect")
    replies, closed = await exchange_all(gw.port, data, wait=3)
    assert len(replies) == 1, [r.status for r in replies]
    raw_error(replies[0], 400, "invalid_request")
    assert closed
    await asyncio.sleep(0.2)
    assert gw.upstream.snapshot() == ([], [])


@pytest.mark.parametrize(
    ("method", "version", "headers"),
    [
        ("POST", "1.1", HANDSHAKE),
        ("GET", "1.0", HANDSHAKE),
        ("GET", "1.1", replaced(HANDSHAKE, "Sec-WebSocket-Key", None)),
        ("GET", "1.1", replaced(HANDSHAKE, "Sec-WebSocket-Key", "not base64 at all!!!!!!!")),
        (
            "GET",
            "1.1",
            replaced(HANDSHAKE, "Sec-WebSocket-Key", base64.b64encode(b"fifteen bytes!!").decode()),
        ),
        (
            "GET",
            "1.1",
            replaced(
                HANDSHAKE, "Sec-WebSocket-Key", base64.b64encode(b"seventeen bytes!!").decode()
            ),
        ),
        ("GET", "1.1", [*HANDSHAKE, ("Sec-WebSocket-Key", KEY)]),
        ("GET", "1.1", replaced(HANDSHAKE, "Sec-WebSocket-Version", "8")),
        ("GET", "1.1", replaced(HANDSHAKE, "Sec-WebSocket-Version", None)),
        ("GET", "1.1", replaced(HANDSHAKE, "Connection", "keep-alive")),
    ],
    ids=[
        "post",
        "http10",
        "no-key",
        "key-not-base64",
        "key-15-bytes",
        "key-17-bytes",
        "key-twice",
        "version-8",
        "no-version",
        "no-connection-upgrade",
    ],
)
async def test_malformed_websocket_handshake_never_reaches_the_upstream(
    gw: Recorded, method: str, version: str, headers: list[tuple[str, str]]
) -> None:
    data = request_bytes(method, "/ws-raw/chat", headers, port=gw.port)
    data = data.replace(b" HTTP/1.1\r\n", f" HTTP/{version}\r\n".encode(), 1)
    if method == "POST":
        data = data.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n", 1)
    replies, _ = await exchange_all(gw.port, data, wait=3)
    assert replies and replies[0].status != 101
    raw_error(replies[0], 400, "invalid_request")
    assert replies[0].header("Sec-WebSocket-Version") == "13"
    await asyncio.sleep(0.3)
    assert gw.upstream.snapshot() == ([], [])


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Big", "b" * 9000)],  # one field over max_header_field
        [(f"X-Many-{i}", "m") for i in range(150)],  # over max_header_count
        [(f"X-Part-{i}", "p" * 1600) for i in range(40)],  # 64 KiB in total
    ],
    ids=["one-field", "field-count", "total-bytes"],
)
async def test_header_section_too_large_is_431(
    gw: Recorded, headers: list[tuple[str, str]]
) -> None:
    replies, closed = await exchange_all(gw.port, request_bytes("GET", "/raw/big", headers), wait=3)
    raw_error(replies[0], 431, "headers_too_large")
    assert closed
    await asyncio.sleep(0.2)
    assert gw.upstream.snapshot() == ([], [])


async def _first_answer(port: int, data: bytes) -> list[int]:
    """Statuses the gateway sends before the client has sent any body (1xx included)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(read_head(reader), 5)
        return [head.status]
    finally:
        await close_writer(writer)


async def test_expect_continue_with_a_bad_key_gets_401_without_100(
    gw: Recorded, keys: KeyMaker
) -> None:
    key = await keys.key(["write"])
    wrong = key.with_secret("x" * 32)
    data = request_bytes(
        "POST",
        "/auth/upload",
        [
            ("Authorization", f"Bearer {wrong}"),
            ("Expect", "100-continue"),
            ("Content-Length", "10"),
        ],
    )
    assert await _first_answer(gw.port, data) == [401]


async def test_expect_continue_over_max_body_gets_413_without_100(gw: Recorded) -> None:
    data = request_bytes(
        "POST",
        "/raw/small/upload",
        [("Expect", "100-continue"), ("Content-Length", str(10 * 1024 * 1024))],
    )
    assert await _first_answer(gw.port, data) == [413]


async def test_expect_continue_is_never_sent_to_http10(gw: Recorded) -> None:
    data = request_bytes(
        "POST", "/echo/upload", [("Expect", "100-continue"), ("Content-Length", "5")]
    )
    data = data.replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(data)
        await writer.drain()
        with pytest.raises(TimeoutError):  # nothing: the client must send its body
            await asyncio.wait_for(read_head(reader), BODY_IDLE_TIMEOUT / 2)
        writer.write(b"hello")
        await writer.drain()
        final = await asyncio.wait_for(read_response(reader), 5)
        assert final.status == 200
    finally:
        await close_writer(writer)


async def test_expect_continue_is_sent_once_the_request_is_accepted(gw: Recorded) -> None:
    data = request_bytes(
        "POST", "/echo/upload", [("Expect", "100-continue"), ("Content-Length", "5")]
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(data)
        await writer.drain()
        interim = await asyncio.wait_for(read_head(reader), 5)
        assert interim.status == 100
        writer.write(b"hello")
        await writer.drain()
        final = await asyncio.wait_for(read_response(reader), 5)
        assert final.status == 200
        assert final.json()["body"] == "hello"
    finally:
        await close_writer(writer)
