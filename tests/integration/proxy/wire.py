"""Client-side helpers that control exactly what goes on the wire.

aiohttp's client normalises paths, merges headers and answers `100 Continue` itself, so
tests that send `/a/../b`, `%2F`, absolute-form targets, repeated headers or `Expect:
100-continue` speak HTTP/1.1 over a plain socket with these helpers instead. Also here:
a small in-process upstream ("probe") for what the demo upstream cannot report (client
close codes, cancellation, hop-by-hop response headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

Headers = Sequence[tuple[str, str]]


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(
    method: str, target: str, headers: Headers = (), body: bytes = b"", *, port: int | None = None
) -> bytes:
    """An HTTP/1.1 request as bytes; Host is added unless given, nothing else is."""
    lines = [f"{method} {target} HTTP/1.1"]
    if not any(k.lower() == "host" for k, _ in headers):
        lines.append(f"Host: 127.0.0.1:{port}" if port else "Host: localhost")
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_head(reader: asyncio.StreamReader) -> RawResponse:
    """Status line and headers of the next response (1xx included), body not read."""
    status_line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
    if not status_line:
        raise ConnectionError("connection closed before a response")
    _version, status, *reason = status_line.split(" ", 2)
    headers: list[tuple[str, str]] = []
    while True:
        line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
        if not line:
            break
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return RawResponse(int(status), reason[0] if reason else "", headers)


async def read_body(reader: asyncio.StreamReader, head: RawResponse, method: str = "GET") -> bytes:
    """The body that follows `head`: by Content-Length, chunked, or until EOF."""
    if method == "HEAD" or head.status in (204, 304) or 100 <= head.status < 200:
        return b""
    encoding = (head.header("Transfer-Encoding") or "").lower()
    if "chunked" in encoding:
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()).strip():  # trailers
                    pass
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    length = head.header("Content-Length")
    if length is not None:
        return await reader.readexactly(int(length))
    return await reader.read()


async def read_response(
    reader: asyncio.StreamReader, method: str = "GET", *, skip_interim: bool = True
) -> RawResponse:
    while True:
        head = await read_head(reader)
        if not (skip_interim and 100 <= head.status < 200):
            break
    head.body = await read_body(reader, head, method)
    return head


async def raw_request(
    port: int,
    method: str,
    target: str,
    headers: Headers = (),
    body: bytes = b"",
    *,
    wait: float = 15.0,
) -> RawResponse:
    """Send one request on a fresh connection and read the final response."""
    return await raw_exchange(
        port, request_bytes(method, target, headers, body, port=port), method=method, wait=wait
    )


async def raw_exchange(
    port: int, data: bytes, *, method: str = "GET", wait: float = 15.0
) -> RawResponse:
    """Send `data` as is on a fresh connection; read the final response within `wait` s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader, method), wait)
    finally:
        await close_writer(writer)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


def bearer(secret: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {secret}")


def upstream_header(report: dict[str, Any], name: str) -> list[str]:
    """Every value of `name` the echo upstream received (its report keeps repeats)."""
    return [v for k, v in report["headers"] if k.lower() == name.lower()]


# --- the probe: an in-process upstream on its own thread and loop --------------------


UPSTREAM_LIMITS = {
    "RateLimit-Limit": "999",
    "RateLimit-Remaining": "998",
    "RateLimit-Reset": "1",
    "X-Probe-End": "kept",
}


@dataclass
class ProbeUpstream:
    """An upstream that records what the echo upstream cannot report.

    GET /probe/hop       answers with hop-by-hop response headers (the gateway must drop)
    GET /probe/slow      sleeps 30 s; records whether it was cancelled (client went away)
    /probe/ws (upgrade)  echoes text; records the close code the client side sent
    GET /probe/own-limits, /probe/upstream-limits  answer with the upstream's own
                         RateLimit-* headers (UPSTREAM_LIMITS)
    """

    port: int
    ws_close_codes: list[int | None] = field(default_factory=list)
    slow_started: threading.Event = field(default_factory=threading.Event)
    slow_cancelled: threading.Event = field(default_factory=threading.Event)
    ws_closed: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    def start(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="probe-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/probe/hop", self._hop)
        app.router.add_get("/probe/slow", self._slow)
        app.router.add_get("/probe/ws", self._ws)
        app.router.add_get("/probe/own-limits", self._own_limits)
        app.router.add_get("/probe/upstream-limits", self._own_limits)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hop(self, _: web.Request) -> web.Response:
        return web.Response(
            text="hop",
            headers={
                "Connection": "X-Probe-Hop",
                "X-Probe-Hop": "must not reach the client",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic realm=probe",
                "X-Probe-End": "kept",
                "Server": "probe/9.9 Python/3.11 aiohttp/3",
            },
        )

    async def _own_limits(self, _: web.Request) -> web.Response:
        return web.Response(text="limits", headers=UPSTREAM_LIMITS)

    async def _slow(self, _: web.Request) -> web.Response:
        self.slow_started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.slow_cancelled.set()
            raise
        return web.Response(text="slept")

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
        self.ws_close_codes.append(ws.close_code)
        self.ws_closed.set()
        return ws
