"""Helpers of the user-token tests that reach past the proxy: HTTP calls that name their
headers, a gateway trusting several issuers, waiting for a bound, the gateway's access log
lines, and a TCP relay to PostgreSQL that a test can cut."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from tests.integration.user_tokens.conftest import AUDIENCE, token_config
from tests.support.errors import Reply
from tests.support.gateway_process import GatewayProcess, UpstreamProcess


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> Reply:
    async with http.get(url, headers=headers or {}) as resp:
        return Reply(resp.status, resp.headers, await resp.text())


def issuers_config(
    upstream: UpstreamProcess, issuers: list[str | dict[str, Any]], **kw: Any
) -> dict[str, Any]:
    """token_config trusting every issuer of `issuers` (a URL: discovery, RS256 and ES256;
    a dict: that issuer entry as given, audience and algorithms defaulted)."""
    first = issuers[0] if isinstance(issuers[0], str) else str(issuers[0]["issuer"])
    config = token_config(upstream, first, **kw)
    entries = []
    for issuer in issuers:
        entry: dict[str, Any] = {"issuer": issuer} if isinstance(issuer, str) else dict(issuer)
        entry.setdefault("audience", AUDIENCE)
        entry.setdefault("algorithms", ["RS256", "ES256"])
        entry.setdefault("leeway", "5s")
        entries.append(entry)
    config["user_tokens"] = entries
    return config


async def within(predicate: Callable[[], Awaitable[bool]], bound: float) -> float:
    """Seconds until `predicate` holds; fails when it still does not after `bound`."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < bound, f"not within {bound} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def access_line(gw: GatewayProcess, request_id: str, limit: float = 5.0) -> dict[str, Any]:
    """The gateway's JSON access-log line of `request_id` (lines are flushed every second)."""
    deadline = time.monotonic() + limit
    while True:
        for line in gw.process.stdout().splitlines():
            if request_id in line and line.startswith("{"):
                entry: dict[str, Any] = json.loads(line)
                if entry.get("request_id") == request_id:
                    return entry
        assert time.monotonic() < deadline, f"no access-log line for {request_id}"
        await asyncio.sleep(0.1)


def with_port(url: str, port: int) -> str:
    """`url` (a database URL) pointing at 127.0.0.1:`port` instead."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class Relay:
    """A TCP relay to a port (a gateway's only way to its PostgreSQL) that `cut()` ends:
    every connection is reset and new ones are refused."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # no new connections
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        if server is not None:
            await server.wait_closed()
