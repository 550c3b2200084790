"""The check listener's own server (gateway/check/listener.py) on the wire: pipelined
checks answered in order, refusals of the head in their turn, the head and keep-alive
timeouts, bodies that are never read as checks, HEAD and HTTP/1.0 answers.

A gateway of its own with short timeouts (the shared one keeps the defaults).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.integration.boundary.rawhttp import (
    closed_within,
    dripped_head_closed,
    open_raw,
    responses_until_close,
)
from tests.integration.proxy.harness import proxy_config
from tests.integration.proxy.wire import close_writer, read_response, request_bytes
from tests.support.configs import gateway_env
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.keys import KeyMaker, key_maker
from tests.support.stores import Stores

HEADER_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 2.0
SLACK = 2.0


@pytest.fixture(scope="module")
def timed_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = proxy_config(echo_upstream.url, closed_port(), closed_port())
    config.setdefault("server", {}).update(
        {
            "header_timeout": f"{HEADER_TIMEOUT:g}s",
            "keepalive_timeout": f"{KEEPALIVE_TIMEOUT:g}s",
            "max_header_count": 20,
        }
    )
    gw = start_gateway(
        config,
        tmp_path_factory.mktemp("check-listener"),
        gateway_env(stores),
        name="check-listener-gateway",
        check=True,
    )
    with stopped_cleanly(gw):
        yield gw


@pytest.fixture
def port(timed_gateway: GatewayProcess) -> int:
    assert timed_gateway.check_port is not None
    return timed_gateway.check_port


@pytest.fixture
async def keys(timed_gateway: GatewayProcess) -> AsyncIterator[KeyMaker]:
    async with key_maker(timed_gateway.config_path, timed_gateway.env) as maker:
        yield maker


def nginx_check(uri: str, key: str | None = None, method: str = "GET") -> list[tuple[str, str]]:
    headers = [("X-Original-Method", method), ("X-Original-URI", uri)]
    if key is not None:
        headers.append(("X-API-Key", key))
    return headers


async def test_pipelined_checks_are_answered_in_order(port: int, keys: KeyMaker) -> None:
    key = await keys.key(["read"])
    asks = [
        request_bytes("GET", "/nginx", nginx_check("/api/read/1", key.secret)),
        request_bytes("GET", "/nginx", nginx_check("/api/read/2")),  # no key: 401
        request_bytes("GET", "/nginx", nginx_check("/api/write/3", key.secret, "POST")),  # 403
        request_bytes("GET", "/nowhere"),  # not a check endpoint: 404
        request_bytes("GET", "/nginx", nginx_check("/api/read/5", key.secret)),
    ]
    reader, writer = await open_raw(port)
    try:
        writer.write(b"".join(asks))
        await writer.drain()
        statuses = [(await asyncio.wait_for(read_response(reader), 5)).status for _ in asks]
        assert statuses == [200, 401, 403, 404, 200]
    finally:
        await close_writer(writer)


async def test_garbage_after_checks_is_refused_in_its_turn_then_closed(
    port: int, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    first = request_bytes("GET", "/nginx", nginx_check("/api/read/1", key.secret))
    reader, writer = await open_raw(port)
    try:
        writer.write(first + b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
        await writer.drain()
        replies, closed = await responses_until_close(reader, wait=5)
        assert [r.status for r in replies] == [200, 400]
        assert replies[1].json()["error"]["code"] == "invalid_request"
        assert closed
    finally:
        await close_writer(writer)


async def test_too_many_fields_is_431_and_closed(port: int) -> None:
    fields = [(f"X-Filler-{i}", "x") for i in range(30)]
    reader, writer = await open_raw(port)
    try:
        writer.write(request_bytes("GET", "/nginx", nginx_check("/api/read/1") + fields))
        await writer.drain()
        replies, closed = await responses_until_close(reader, wait=5)
        assert [r.status for r in replies] == [431]
        assert replies[0].json()["error"]["code"] == "headers_too_large"
        assert closed
    finally:
        await close_writer(writer)


async def test_a_large_body_is_413_and_never_read_as_checks(port: int) -> None:
    body = b"x" * (2**20 + 10)
    head = request_bytes(
        "POST", "/envoy/api/write/x", [("Content-Length", str(len(body)))], body=b""
    )
    reader, writer = await open_raw(port)
    try:
        writer.write(head)
        writer.write(body)
        await writer.drain()
    except ConnectionError:
        pass  # closed while the rest was still being sent
    try:
        replies, closed = await responses_until_close(reader, wait=5)
        # The check itself (no key: 401) is answered first; then the body's refusal.
        assert [r.status for r in replies] == [401, 413]
        assert closed
    finally:
        await close_writer(writer)


async def test_head_and_http10_answers(port: int) -> None:
    reader, writer = await open_raw(port)
    try:
        writer.write(request_bytes("HEAD", "/envoy/api/read/1"))
        await writer.drain()
        head = await asyncio.wait_for(read_response(reader, "HEAD"), 5)
        assert head.status == 401
        assert int(head.header("Content-Length") or 0) > 0  # what a GET would carry
        assert head.body == b""
        # HTTP/1.0 without keep-alive: answered, then closed.
        writer.write(b"GET /envoy/api/read/1 HTTP/1.0\r\n\r\n")
        await writer.drain()
        replies, closed = await responses_until_close(reader, wait=5)
        assert [r.status for r in replies] == [401]
        assert closed
    finally:
        await close_writer(writer)


async def test_an_upgrade_check_is_answered_then_closed(port: int, keys: KeyMaker) -> None:
    key = await keys.key(["read"])
    upgrade = [("Connection", "Upgrade"), ("Upgrade", "websocket")]
    reader, writer = await open_raw(port)
    try:
        writer.write(
            request_bytes("GET", "/nginx", nginx_check("/api/read/1", key.secret) + upgrade)
            + request_bytes("GET", "/nginx", nginx_check("/api/read/2", key.secret))
        )
        await writer.drain()
        replies, closed = await responses_until_close(reader, wait=5)
        assert [r.status for r in replies] == [200]  # what followed the upgrade: unread
        assert closed
    finally:
        await close_writer(writer)


async def test_a_silent_connection_is_closed_after_the_head_timeout(port: int) -> None:
    reader, writer = await open_raw(port)
    started = time.monotonic()
    try:
        assert await closed_within(reader, HEADER_TIMEOUT + SLACK)
        assert time.monotonic() - started >= HEADER_TIMEOUT - 0.2
    finally:
        await close_writer(writer)


async def test_a_dripped_head_is_cut_off(port: int) -> None:
    reader, writer = await open_raw(port)
    started = time.monotonic()
    try:
        assert await dripped_head_closed(reader, writer, b"GET /nginx HTTP/1.1\r\n", lines=60)
        assert time.monotonic() - started < HEADER_TIMEOUT + SLACK
    finally:
        await close_writer(writer)


async def test_idle_keep_alive_outlives_the_head_timeout_not_the_keepalive(port: int) -> None:
    reader, writer = await open_raw(port)
    try:
        writer.write(request_bytes("GET", "/envoy/api/read/1"))
        await writer.drain()
        assert (await asyncio.wait_for(read_response(reader), 5)).status == 401
        await asyncio.sleep(HEADER_TIMEOUT + 0.3)  # idle: the keep-alive timeout applies
        writer.write(request_bytes("GET", "/envoy/api/read/2"))
        await writer.drain()
        assert (await asyncio.wait_for(read_response(reader), 5)).status == 401
        started = time.monotonic()
        assert await closed_within(reader, KEEPALIVE_TIMEOUT + SLACK)
        assert time.monotonic() - started >= KEEPALIVE_TIMEOUT - 0.3
    finally:
        await close_writer(writer)


async def test_a_field_line_without_end_is_431_not_buffered(port: int) -> None:
    """llhttp hands a field over only once its line ends: the bytes of one head are
    bounded while they arrive, not after."""
    reader, writer = await open_raw(port)
    try:
        writer.write(b"GET /nginx HTTP/1.1\r\nX-Endless: ")
        try:
            for _ in range(64):  # up to 4 MiB, never a line end
                writer.write(b"a" * 65536)
                await writer.drain()
        except ConnectionError:
            pass  # refused and closed while this was still being sent
        replies, closed = await responses_until_close(reader, wait=5)
        assert [r.status for r in replies] == [431]
        assert closed
    finally:
        await close_writer(writer)
