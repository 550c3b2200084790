"""Raw-socket helpers for the boundary tests: send bytes, read every response, see EOF."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.integration.proxy.wire import RawResponse, close_writer, read_body, read_head


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def responses_until_close(
    reader: asyncio.StreamReader, *, wait: float = 10.0, interim: bool = False
) -> tuple[list[RawResponse], bool]:
    """Every response on the connection until the gateway closes it (or `wait` passes).

    Returns the responses (1xx included when `interim`) and whether the connection was
    closed by the gateway within `wait`.
    """
    found: list[RawResponse] = []
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return found, False
        try:
            head = await asyncio.wait_for(read_head(reader), left)
        except (ConnectionError, asyncio.IncompleteReadError):
            return found, True
        except TimeoutError:
            return found, False
        if 100 <= head.status < 200:
            if interim:
                found.append(head)
            continue
        head.body = await asyncio.wait_for(read_body(reader, head), max(left, 0.1))
        found.append(head)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the peer closes (EOF or reset) within `seconds`, ignoring any bytes sent."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        if not data:
            return True
    return False


async def exchange_all(
    port: int, data: bytes, *, wait: float = 10.0, interim: bool = False
) -> tuple[list[RawResponse], bool]:
    reader, writer = await open_raw(port)
    try:
        writer.write(data)
        await writer.drain()
        return await responses_until_close(reader, wait=wait, interim=interim)
    finally:
        with contextlib.suppress(Exception):
            await close_writer(writer)


async def dripped_head_closed(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    first_line: bytes,
    *,
    lines: int,
    every: float = 0.1,
) -> bool:
    """Send `first_line`, then a header line every `every` s, never ending the head;
    whether the server closed the connection before `lines` were sent."""
    writer.write(first_line)
    for i in range(lines):  # progress, but never a complete head
        try:
            writer.write(b"X-Drip-%d: y\r\n" % (i % 10))
            await writer.drain()
        except ConnectionError:
            return True
        if await closed_within(reader, every):
            return True
    return False
