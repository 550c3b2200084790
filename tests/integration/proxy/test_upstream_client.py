"""The lean upstream client (gateway/proxy/upstream_client.py) against upstreams that
misbehave on a real socket: what may be reused, retried, timed out, and what never
reaches the next client.

Each upstream is an asyncio server scripted per connection; it records how many
connections it accepted and what each one received.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import ClientError, ServerTimeoutError

from gateway.proxy.upstream_client import BODY_HIGH_WATER, UpstreamPool, request_head

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Upstream:
    port: int
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    heads: list[bytes] = field(default_factory=list)


async def read_head(reader: asyncio.StreamReader, upstream: Upstream) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    upstream.heads.append(head)
    return head


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[Upstream]:
    upstream = Upstream(port=0)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream.connections += 1
        upstream.open_now += 1
        upstream.most_open = max(upstream.most_open, upstream.open_now)
        try:
            await script(reader, writer, upstream.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            upstream.open_now -= 1
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()


def pool_for(upstream: Upstream, *, read_timeout: float = 5.0, limit: int = 8) -> UpstreamPool:
    return UpstreamPool(
        "127.0.0.1",
        upstream.port,
        max_connections=limit,
        connect_timeout=2.0,
        read_timeout=read_timeout,
    )


async def fetch(pool: UpstreamPool, method: str = "GET", path: str = "/") -> tuple[int, bytes]:
    head = request_head(method, path, [("Host", "upstream")])
    async with pool.request(method, head) as reply:
        body = b"".join([chunk async for chunk in reply.content.iter_any()])
        return reply.status, body


def answering(*replies: bytes) -> Script:
    """Answers each request on a connection with the next reply (the last one repeats)."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        n = 0
        while True:
            await read_head(reader, upstream_of[script])
            writer.write(replies[min(n, len(replies) - 1)])
            await writer.drain()
            n += 1

    return script


upstream_of: dict[Script, Upstream] = {}


@contextlib.asynccontextmanager
async def answering_upstream(*replies: bytes) -> AsyncIterator[Upstream]:
    script = answering(*replies)
    async with scripted(script) as upstream:
        upstream_of[script] = upstream
        yield upstream


async def test_keep_alive_connections_are_reused() -> None:
    async with answering_upstream(OK) as upstream:
        pool = pool_for(upstream)
        for _ in range(5):
            assert await fetch(pool) == (200, b"ok")
        assert upstream.connections == 1
        assert len(upstream.heads) == 5
        pool.close()


async def test_the_request_head_is_what_was_given() -> None:
    async with answering_upstream(OK) as upstream:
        pool = pool_for(upstream)
        head = request_head("DELETE", "/base/a%2Fb?x=1", [("Host", "h"), ("X-Keygate-Org", "o")])
        async with pool.request("DELETE", head) as reply:
            assert reply.status == 200
            assert reply.content.read_nowait() == b"ok"
        assert upstream.heads == [
            b"DELETE /base/a%2Fb?x=1 HTTP/1.1\r\nHost: h\r\nX-Keygate-Org: o\r\n\r\n"
        ]
        pool.close()


@pytest.mark.parametrize(
    "fields",
    [
        [("X-A", "1\r\nX-Injected: 1")],
        [("X-A", "1\nX-Injected: 1")],
        [("X-A", "1\rX")],
        [("X-A\r\nX-B", "1")],
        [("X-A", "a\0b")],
    ],
)
def test_a_field_that_could_split_the_request_is_refused(fields: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        request_head("GET", "/", fields)


async def test_connection_close_is_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    async with answering_upstream(closing) as upstream:
        pool = pool_for(upstream)
        assert await fetch(pool) == (200, b"ok")
        assert await fetch(pool) == (200, b"ok")
        assert upstream.connections == 2
        pool.close()


async def test_a_second_answer_in_the_same_write_never_reaches_the_next_request() -> None:
    """More bytes than the answer (a second response, or a body longer than its length)
    end the connection: read on, they would be the next client's answer."""
    evil = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"
    async with answering_upstream(evil) as upstream:
        pool = pool_for(upstream)
        assert await fetch(pool) == (200, b"ok")
        assert await fetch(pool) == (200, b"ok")
        assert upstream.connections == 2
        pool.close()


async def test_bytes_sent_while_idle_end_the_connection() -> None:
    stale = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader, upstream)
        writer.write(OK)
        await writer.drain()
        if n == 1:
            await asyncio.sleep(0.1)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")  # unasked
            await writer.drain()
            while True:  # this connection would answer anything else with "stale"
                await read_head(reader, upstream)
                writer.write(stale)
                await writer.drain()
        await reader.read(1)  # stays open until the client goes

    async with scripted(script) as upstream:
        pool = pool_for(upstream)
        assert await fetch(pool) == (200, b"ok")
        await asyncio.sleep(0.3)
        assert await fetch(pool) == (200, b"ok")
        assert upstream.connections == 2
        pool.close()


async def test_a_pooled_connection_closed_unanswered_is_retried_only_when_idempotent() -> None:
    """The upstream reads the second request on a connection, then closes it without a
    byte: GET is sent again on a new connection; POST is not (it may have acted)."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader, upstream)
        writer.write(OK)
        await writer.drain()
        await read_head(reader, upstream)  # the second request: dropped unanswered

    async with scripted(script) as upstream:
        pool = pool_for(upstream)
        assert await fetch(pool) == (200, b"ok")
        assert await fetch(pool, "GET") == (200, b"ok")  # retried on connection 2
        assert upstream.connections == 2
        with pytest.raises(ClientError):
            await fetch(pool, "POST")  # on connection 2's second request: not retried
        assert upstream.connections == 2
        pool.close()


async def test_no_answer_within_the_read_timeout() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader, upstream)
        await asyncio.sleep(5)

    async with scripted(script) as upstream:
        pool = pool_for(upstream, read_timeout=0.3)
        started = asyncio.get_running_loop().time()
        with pytest.raises(ServerTimeoutError):
            await fetch(pool)
        assert 0.25 < asyncio.get_running_loop().time() - started < 2
        pool.close()


async def test_a_body_that_stalls_fails_after_the_read_timeout() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader, upstream)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async with scripted(script) as upstream:
        pool = pool_for(upstream, read_timeout=0.3)
        head = request_head("GET", "/", [("Host", "u")])
        async with pool.request("GET", head) as reply:
            assert reply.status == 200
            with pytest.raises(ServerTimeoutError):
                async for _chunk in reply.content.iter_any():
                    pass
        pool.close()


async def test_a_dripping_body_within_the_timeout_is_not_cut() -> None:
    """The read timeout bounds each wait, not the whole answer."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader, upstream)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
        for byte in b"dripping":
            await asyncio.sleep(0.1)
            writer.write(bytes([byte]))
            await writer.drain()
        await reader.read(1)

    async with scripted(script) as upstream:
        pool = pool_for(upstream, read_timeout=0.3)
        assert await fetch(pool) == (200, b"dripping")  # 0.8 s in all
        pool.close()


async def test_body_framings() -> None:
    """Chunked, until-close (no length), and a 1xx interim answer before the final one."""
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    for reply, body in ((chunked, b"abcde"), (until_close, b"until the end"), (interim, b"ok")):

        async def script(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int, reply: bytes = reply
        ) -> None:
            await read_head(reader, upstream)
            writer.write(reply)
            await writer.drain()
            if b"Connection: close" in reply:
                writer.close()
                return
            await reader.read(1)

        async with scripted(script) as upstream:
            pool = pool_for(upstream)
            assert await fetch(pool) == (200, body)
            pool.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # closed before its length
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # closed mid-chunk
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    ],
)
async def test_broken_answers_are_errors(reply: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader, upstream)
        writer.write(reply)
        await writer.drain()

    async with scripted(script) as upstream:
        pool = pool_for(upstream)
        with pytest.raises(ClientError):
            await fetch(pool)
        pool.close()


async def test_no_more_connections_than_the_limit() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_head(reader, upstream)
            await asyncio.sleep(0.05)
            writer.write(OK)
            await writer.drain()

    async with scripted(script) as upstream:
        pool = pool_for(upstream, limit=2)
        results = await asyncio.gather(*(fetch(pool) for _ in range(10)))
        assert results == [(200, b"ok")] * 10
        assert upstream.most_open == 2
        pool.close()


async def test_a_large_body_is_read_with_flow_control() -> None:
    """A body far larger than the socket buffers: while the reader lags, the upstream
    connection is not read (the upstream's writes block), a lag longer than the read
    timeout is not the upstream's timeout, and every byte arrives in order."""
    size = 1024 * BODY_HIGH_WATER  # 64 MiB
    payload = bytes(range(256)) * (size // 256)
    drained = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader, upstream)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + payload)
        await writer.drain()
        drained.set()
        await read_head(reader, upstream)
        writer.write(OK)
        await writer.drain()
        await reader.read(1)

    async with scripted(script) as upstream:
        pool = pool_for(upstream, read_timeout=0.3)
        head = request_head("GET", "/", [("Host", "u")])
        received = bytearray()
        async with pool.request("GET", head) as reply:
            async for chunk in reply.content.iter_any():
                if not received:
                    await asyncio.sleep(0.6)  # a slow client, twice the read timeout
                    assert not drained.is_set()  # the rest waits in the upstream
                received += chunk
        assert len(received) == size
        assert bytes(received) == payload
        assert await fetch(pool) == (200, b"ok")  # on the same connection: it went back
        assert upstream.connections == 1
        pool.close()


async def test_a_cancelled_request_does_not_leak_its_slot_or_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            head = await read_head(reader, upstream)
            if b"/slow" in head:
                await asyncio.sleep(5)
            writer.write(OK)
            await writer.drain()

    async with scripted(script) as upstream:
        pool = pool_for(upstream, limit=1)
        slow = asyncio.create_task(fetch(pool, path="/slow"))
        await asyncio.sleep(0.1)
        slow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow
        # The slot is free again, and the abandoned connection is not reused: its answer
        # would arrive as this request's.
        assert await asyncio.wait_for(fetch(pool), 2) == (200, b"ok")
        assert upstream.connections == 2
        pool.close()


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * (2 * 2**20),  # one field line, never ending
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-F%d: v\r\n" % i for i in range(200)) + b"\r\n",
        b"HTTP/1.1 200 " + b"R" * (2 * 2**20),  # a reason phrase without end
    ],
)
async def test_an_answer_head_beyond_the_bounds_is_an_error(head: bytes) -> None:
    """llhttp hands a field over only once it is complete: what waits is bounded as
    aiohttp's client bounds it (128 fields, 8190 bytes a line), never buffered unbounded."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader, upstream)
        writer.write(head)
        await writer.drain()
        await reader.read(1)

    async with scripted(script) as upstream:
        pool = pool_for(upstream)
        with pytest.raises(ClientError):
            await asyncio.wait_for(fetch(pool), 5)
        pool.close()
