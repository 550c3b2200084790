"""A lean keep-alive HTTP/1.1 client for the upstream requests that carry no body.

Most proxied requests are a GET, DELETE or OPTIONS without a body, answered with a small
body: aiohttp's ClientSession spends most of a plain proxy's time on them (its request and
response objects, header copies, timers, tracing hooks), about three times what writing
one head and parsing one answer costs. This client does only that: one pooled connection
per request in flight, the head written in one `write`, the answer parsed by `httptools`
(llhttp, the parser Node.js and aiohttp use), its body handed over as it arrives with
flow control. Requests with a body, HEAD requests, `https` upstreams and WebSocket
handshakes keep going through aiohttp's client (`gateway.proxy.upstreams`).

It keeps aiohttp's rules where they matter to a client: a connection goes back to the
pool only when its answer was read whole, the upstream did not ask to close, and nothing
arrived that was not part of that answer (a second response, or bytes while idle, close
it: they would be read as the next client's answer); an idempotent request whose pooled
connection turns out closed before any answer byte is retried once on a new connection;
the read timeout bounds each wait for the upstream (the head, then every body chunk) and
stops while the client is the slow side; errors are aiohttp's public exceptions
(`ServerTimeoutError` is a TimeoutError, the rest `ClientError`), so the forwarding code
maps both clients' failures the same way.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import cast

import httptools
from aiohttp import (
    ClientConnectionError,
    ClientPayloadError,
    ServerDisconnectedError,
    ServerTimeoutError,
)
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy.http_head import http_head

# RFC 9110 §9.2.2: a request that may be sent again when its connection failed unanswered.
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))
# Body bytes buffered before the upstream connection stops being read (the client side
# is then the slow one); reading resumes once the buffer is handed on.
BODY_HIGH_WATER = 2**16
# An answer's head, as aiohttp's client bounds it: fields, bytes per field line, and what
# may arrive before the head ends (llhttp hands a field over only once it is complete).
MAX_FIELDS = 128
MAX_FIELD_LINE = 8190
MAX_HEAD = MAX_FIELDS * MAX_FIELD_LINE
KEEPALIVE_TIMEOUT = 30.0  # an idle pooled connection older than this is not reused


class ReplyBody:
    """The answer's body as it arrives: `read_nowait`, `at_eof` and `iter_any`, as
    aiohttp's StreamReader names them, so forwarding reads either client's reply alike."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._failure: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > BODY_HIGH_WATER:
            self._connection.pause()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, failure: BaseException) -> None:
        if not self._eof:
            self._failure = failure
            self._wake()

    @property
    def complete(self) -> bool:
        """Every byte of the body arrived (whether or not it was read yet)."""
        return self._eof

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def read_nowait(self) -> bytes:
        if self._chunks:
            data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            self._connection.resume()
            return data
        if self._failure is not None:
            raise self._failure
        return b""

    async def iter_any(self) -> AsyncIterator[bytes]:
        while True:
            data = self.read_nowait()
            if data:
                yield data
            elif self._eof:
                return
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class UpstreamReply:
    """What the upstream answered: status, reason, headers and the body as it arrives."""

    __slots__ = ("_connection", "content", "headers", "reason", "status")

    def __init__(
        self,
        connection: _Connection,
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
        content: ReplyBody,
    ) -> None:
        self._connection = connection
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content

    def close(self) -> None:
        """Never reuse this connection (the request was cut short)."""
        self._connection.discard()


class _Connection(asyncio.Protocol):
    """One upstream connection: at most one request in flight, answers parsed by llhttp."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        # The request in flight (None while idle).
        self.head: asyncio.Future[UpstreamReply] | None = None
        self.body: ReplyBody | None = None
        self.received = False  # any byte of its answer arrived
        self.head_received = 0  # bytes received before its head was parsed
        self.answered = False  # its final (non-1xx) answer's head was parsed
        self.until_close = False  # its body ends when the connection does
        self.reason = ""
        self.fields: list[tuple[str, str]] = []
        self.last_activity = 0.0
        self.paused = False
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.head is None:
            self.discard()  # nothing was asked: no answer may come
            return
        self.received = True
        self.last_activity = time.monotonic()
        if not self.answered:
            self.head_received += len(data)
            if self.head_received > MAX_HEAD:
                self._fail(ClientPayloadError("the upstream's answer head is too large"))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ClientPayloadError("the upstream switched protocols unasked"))
        except httptools.HttpParserError:
            self._fail(ClientPayloadError("the upstream's answer is not valid HTTP/1.1"))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.transport = None
        if self.head is None:
            return
        if self.answered and self.until_close and self.body is not None:
            self.body.feed_eof()  # a body without a length ends with its connection
        else:
            self._fail(ServerDisconnectedError() if not self.answered else _cut_short())

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.answered:
            self.reusable = False  # a second answer to one request: the stream is off
        self.reason = ""
        self.fields = []

    def on_status(self, reason: bytes) -> None:
        self.reason += reason.decode("utf-8", "surrogateescape")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.fields) >= MAX_FIELDS or len(name) + len(value) > MAX_FIELD_LINE:
            raise ValueError("the upstream's answer head is too large")  # llhttp: an error
        self.fields.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 or self.answered or self.head is None or self.head.done():
            return  # 1xx interim answers are not forwarded; extra answers are dropped
        self.answered = True
        headers = CIMultiDictProxy(CIMultiDict(self.fields))
        if not self.parser.should_keep_alive():
            self.reusable = False
        self.until_close = (
            status not in (204, 304)
            and "Content-Length" not in headers
            and "Transfer-Encoding" not in headers
        )
        self.body = ReplyBody(self)
        reply = UpstreamReply(self, status, self.reason, headers, self.body)
        self.head.set_result(reply)

    def on_body(self, body: bytes) -> None:
        if self.body is not None and not self.body.complete:
            self.body.feed(body)

    def on_message_complete(self) -> None:
        if self.answered and self.body is not None and not self.body.complete:
            self.body.feed_eof()

    # -- the request in flight ---------------------------------------------------------

    async def send(self, head: bytes, read_timeout: float) -> UpstreamReply:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.head = loop.create_future()
        self.received = self.answered = self.until_close = False
        self.head_received = 0
        self.body = None
        self.last_activity = time.monotonic()
        if self.timer is None:
            self.timer = loop.call_later(read_timeout, self._timer_fired, read_timeout)
        self.transport.write(head)
        return await self.head

    def finished(self) -> bool:
        """The request is over; whether this connection may carry another."""
        body = self.body
        self.head = None
        self.body = None
        return (
            self.reusable
            and not self.closed
            and self.answered
            and not self.until_close
            and body is not None
            and body.at_eof()
        )

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.last_activity = time.monotonic()  # the wait on the upstream starts now
            self.transport.resume_reading()

    def abandon(self) -> None:
        """Close this connection and forget its request: nothing waits for its answer
        (a failure arriving later must not be set on a future no one awaits)."""
        self.discard()
        self.head = None
        self.body = None

    def discard(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, failure: BaseException) -> None:
        self.reusable = False
        head, body = self.head, self.body
        if head is not None and not head.done():
            head.set_exception(failure)
        elif body is not None:
            body.fail(failure)
        if self.transport is not None:
            self.transport.abort()

    def _timer_fired(self, read_timeout: float) -> None:
        """One timer per connection, re-armed only when it fires (not per request)."""
        self.timer = None
        if self.head is None or self.closed:
            return  # idle: the next request arms it again
        if self.body is not None and self.body.complete:
            return  # everything arrived: nothing to wait for
        loop = asyncio.get_running_loop()
        if self.paused:  # the client is the slow side: that wait is not the upstream's
            self.timer = loop.call_later(read_timeout, self._timer_fired, read_timeout)
            return
        left = self.last_activity + read_timeout - time.monotonic()
        if left <= 0:
            self._fail(ServerTimeoutError("the upstream did not answer within its timeout"))
        else:
            self.timer = loop.call_later(left, self._timer_fired, read_timeout)


def _cut_short() -> ClientPayloadError:
    return ClientPayloadError("the upstream closed the connection before its answer ended")


class UpstreamPool:
    """Keep-alive connections to one `http://host:port`, at most `max_connections` in use."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.slots = asyncio.Semaphore(max_connections)
        self.idle: list[_Connection] = []

    def request(self, method: str, head: bytes) -> _Request:
        """`async with pool.request(method, head) as reply:` — `head` is the whole request
        head (`request_head`); the connection goes back to the pool on exit when it may."""
        return _Request(self, method, head)

    async def connection(self) -> tuple[_Connection, bool]:
        """An idle connection (reused: True) or a new one."""
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_TIMEOUT:
                return conn, True
            conn.discard()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _transport, conn = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port
                )
        except TimeoutError:
            raise ServerTimeoutError("connecting to the upstream timed out") from None
        except OSError as exc:
            raise ClientConnectionError(f"cannot connect to the upstream: {exc}") from None
        return conn, False

    def release(self, conn: _Connection) -> None:
        if conn.finished():
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.discard()
        self.slots.release()

    def close(self) -> None:
        for conn in self.idle:
            conn.discard()
        self.idle.clear()


class _Request:
    __slots__ = ("conn", "head", "method", "pool")

    def __init__(self, pool: UpstreamPool, method: str, head: bytes) -> None:
        self.pool = pool
        self.method = method
        self.head = head
        self.conn: _Connection | None = None

    async def __aenter__(self) -> UpstreamReply:
        pool = self.pool
        await pool.slots.acquire()
        try:
            while True:
                conn, reused = await pool.connection()
                self.conn = conn
                try:
                    return await conn.send(self.head, pool.read_timeout)
                except ServerDisconnectedError:
                    # A pooled connection the upstream had closed unseen: once more on a
                    # new one, when asking again cannot do anything twice.
                    if reused and not conn.received and self.method in IDEMPOTENT:
                        conn.abandon()
                        continue
                    raise
        except BaseException:
            if self.conn is not None:
                self.conn.abandon()
            pool.slots.release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self.conn
        assert conn is not None
        if exc is not None:
            conn.discard()
        self.pool.release(conn)


def request_head(method: str, target: str, fields: Iterable[tuple[str, str]]) -> bytes:
    """`METHOD target HTTP/1.1` and the fields: one write. A CR, LF or NUL in a name or
    value (which could start a second request) is refused, as aiohttp does."""
    head = http_head(f"{method} {target} HTTP/1.1", fields)
    if b"\0" in head:
        raise ValueError("NUL in an upstream request header")
    return head
