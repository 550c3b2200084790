"""The raw recording upstream every boundary test puts behind the gateway.

It behaves like the upstreams that make request smuggling pay: it keeps connections
alive and answers each request as soon as its head has been parsed, *before* reading the
body (aiohttp, Go and gunicorn apps may), then reads the body by the framing it sees and
parses whatever follows as the next request. It parses strictly (tests/support/http1.py):
anything a careful server would refuse is recorded as a protocol error and the
connection closed.

Every request is recorded with its connection, method, target, every header line
verbatim, the body bytes and trailers, and whether the body arrived whole. The answer
names the request id it saw (`X-Upstream-Seen`), so the client can tell an upstream
answer from the gateway's own, and its body the request line and connection number
(`seen GET /x on 3`). A gateway that lets the client's bytes frame the upstream's view,
or reuses a connection it did not finish writing, shows up here as a request nobody
authorised. Runs on its own thread and event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field

from tests.support.http1 import (
    Fields,
    ProtocolError,
    RequestHead,
    request_framing,
    take_chunked,
    take_request_head,
)

SEEN_HEADER = "X-Upstream-Seen"


@dataclass
class Recorded:
    """One request as the upstream parsed it."""

    connection: int
    index: int  # position on its connection, from 0
    head: RequestHead
    body: bytes = b""
    trailers: Fields = field(default_factory=list)
    complete: bool = False  # the whole body arrived, by the upstream's own framing
    last_on_connection: bool = False  # nothing was parsed after it (connection closed)

    @property
    def request_id(self) -> str | None:
        ids = self.head.all("X-Request-Id")
        return ids[0] if len(ids) == 1 else None


@dataclass
class ParseFailure:
    """A connection on which the upstream met bytes it could not parse."""

    connection: int
    reason: str
    rest: bytes


class RecordingUpstream:
    def __init__(self, port: int) -> None:
        self.port = port
        self.recorded: list[Recorded] = []
        self.errors: list[ParseFailure] = []
        self._lock = threading.Lock()
        self._busy = 0  # connections in the middle of a message
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            server = loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", self.port)
            )
            ready.set()
            loop.run_forever()
            server.close()
            loop.run_until_complete(server.wait_closed())
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="recording-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the recording upstream did not start")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # -- what was seen ---------------------------------------------------------------------

    def snapshot(self) -> tuple[list[Recorded], list[ParseFailure]]:
        with self._lock:
            return list(self.recorded), list(self.errors)

    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self.recorded)

    def clear(self) -> None:
        with self._lock:
            self.recorded.clear()
            self.errors.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        """The recorded requests once at least `count` bodies arrived whole (or on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(r.complete for r in self.requests()) >= count:
                break
            time.sleep(0.02)
        return self.requests()

    def settle(self, timeout: float = 3.0) -> None:
        """Wait until no connection is part-way through a message (or `timeout` passes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._busy == 0:
                    return
            time.sleep(0.01)

    # -- the server ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = next(self._ids)
        buf = bytearray()
        previous: Recorded | None = None
        index = 0
        try:
            while True:
                parsed = take_request_head(buf)
                while parsed is None:
                    if not await self._fill(reader, buf):
                        if buf:
                            self._error(connection, "connection closed mid-head", buf)
                        return
                    parsed = take_request_head(buf)
                head, used = parsed
                del buf[:used]
                record = Recorded(connection, index, head)
                index += 1
                with self._lock:
                    self.recorded.append(record)
                    self._busy += 1
                previous = record
                try:
                    framing = request_framing(head)
                except ProtocolError as exc:
                    self._error(connection, str(exc), buf)
                    return
                self._answer(writer, record)
                if framing.kind == "length":
                    while len(buf) < framing.length:
                        if not await self._fill(reader, buf):
                            record.body = bytes(buf)
                            return
                    record.body = bytes(buf[: framing.length])
                    del buf[: framing.length]
                elif framing.kind == "chunked":
                    chunked = take_chunked(buf)
                    while chunked is None:
                        if not await self._fill(reader, buf):
                            record.body = bytes(buf)  # raw, for the report
                            return
                        chunked = take_chunked(buf)
                    record.body, record.trailers = chunked[0].body, chunked[0].trailers
                    del buf[: chunked[1]]
                record.complete = True
                with self._lock:
                    self._busy -= 1
                await writer.drain()
        except ProtocolError as exc:
            self._error(connection, str(exc), buf)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                if previous is not None:
                    previous.last_on_connection = True
                    if not previous.complete:
                        self._busy -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _fill(reader: asyncio.StreamReader, buf: bytearray) -> bool:
        data = await reader.read(65536)
        buf += data
        return bool(data)

    def _error(self, connection: int, reason: str, rest: bytearray) -> None:
        with self._lock:
            self.errors.append(ParseFailure(connection, reason, bytes(rest[:512])))

    @staticmethod
    def _answer(writer: asyncio.StreamWriter, record: Recorded) -> None:
        seen = record.request_id or "-"
        head = record.head
        answer = f"seen {head.method} {head.target} on {record.connection}".encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            + f"{SEEN_HEADER}: {seen}\r\nContent-Length: {len(answer)}\r\n\r\n".encode()
            + answer
        )
