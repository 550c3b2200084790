"""A recording upstream that frames requests as naive servers do, on raw sockets.

It answers each request as soon as its head has arrived (before reading the body, as
aiohttp, Go and gunicorn apps may), keeps connections alive, then reads the body by the
Content-Length or chunked framing *it* sees, and parses whatever follows as the next
request. A gateway that lets the client's bytes frame the upstream's view, or reuses a
connection it did not finish writing, shows up here as a request nobody authorised.

Every parsed request is recorded with its connection number, head fields and exact body
bytes. Runs on its own thread and loop, like tests/integration/proxy/wire.ProbeUpstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Seen:
    """One request as the upstream parsed it."""

    connection: int
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    body_complete: bool = False

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class RawUpstream:
    port: int
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", self.port)
            )
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="raw-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Seen]:
        """The recorded requests once at least `count` bodies were read (or on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [s for s in self.requests() if s.body_complete]
            if len(done) >= count:
                break
            time.sleep(0.02)
        return self.requests()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = next(self._ids)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, *_ = [*lines[0].split(" "), "", ""]
                headers = [
                    (name.strip(), value.strip())
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                ]
                request = Seen(connection, method, target, headers)
                with self._lock:
                    self.seen.append(request)
                answer = f"seen {method} {target} on {connection}".encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer
                )
                await writer.drain()
                request.body = await _read_body(reader, request)
                request.body_complete = True
        writer.close()


async def _read_body(reader: asyncio.StreamReader, request: Seen) -> bytes:
    """The body as this upstream frames it: chunked wins, else Content-Length, else none."""
    encodings = ",".join(request.header_all("Transfer-Encoding")).lower()
    if "chunked" in encodings:
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    lengths = request.header_all("Content-Length")
    if lengths:
        return await reader.readexactly(int(lengths[0]))
    return b""
