"""Large bodies in both directions pass intact while the gateway's memory stays flat.

Bodies are generated and hashed on the fly on the client side, so the test itself holds
no more than a chunk; the gateway's resident set size is sampled during the transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import socket
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp

from gateway.demo_upstream import pattern_bytes
from tests.support.gateway_process import GatewayProcess
from tests.support.keys import KeyMaker

SIZE = 200 * 1024 * 1024
CHUNK = 1024 * 1024
MAX_RSS_GROWTH = 50 * 1024 * 1024


async def _peak_rss_during(gateway: GatewayProcess, work: Awaitable[Any]) -> tuple[Any, int, int]:
    """Run `work`, sampling the gateway's RSS; returns (result, baseline, peak)."""
    baseline = gateway.process.rss_bytes()
    peak = baseline
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, gateway.process.rss_bytes())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.05)

    sampler = asyncio.create_task(sample())
    try:
        result = await work
    finally:
        done.set()
        await sampler
    peak = max(peak, gateway.process.rss_bytes())
    return result, baseline, peak


async def _warm_up(
    gateway: GatewayProcess, http: aiohttp.ClientSession, auth: dict[str, str]
) -> None:
    # The first transfers allocate buffers and pools that stay: measure after them.
    for _ in range(2):
        async with http.post(
            gateway.url + "/api/any/warm", data=io.BytesIO(os.urandom(4 * CHUNK)), headers=auth
        ) as reply:
            assert reply.status == 200
        async with http.get(
            gateway.url + f"/_demo/stream?bytes={4 * CHUNK}", headers=auth
        ) as reply:
            await reply.read()


async def test_large_upload_is_streamed(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    await _warm_up(gateway, http, key.auth)
    block = os.urandom(CHUNK)
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for i in range(SIZE // CHUNK):
            chunk = block[i % 256 :] + block[: i % 256]  # each chunk different
            digest.update(chunk)
            yield chunk

    async def upload() -> dict[str, Any]:
        async with http.post(
            gateway.url + "/api/any/upload", data=body(), headers=key.auth
        ) as reply:
            assert reply.status == 200, await reply.text()
            report: dict[str, Any] = await reply.json()
            return report

    report, baseline, peak = await _peak_rss_during(gateway, upload())
    print(f"upload {SIZE >> 20} MiB: gateway RSS {baseline >> 20} -> peak {peak >> 20} MiB")
    assert report["body_size"] == SIZE
    assert report["body_sha256"] == digest.hexdigest()
    assert any(k.lower() == "transfer-encoding" for k, _ in report["headers"])
    assert peak - baseline < MAX_RSS_GROWTH


async def test_large_download_is_streamed(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    await _warm_up(gateway, http, key.auth)
    expected = hashlib.sha256()
    for offset in range(0, SIZE, CHUNK):
        expected.update(pattern_bytes(min(CHUNK, SIZE - offset), offset))

    async def download() -> tuple[int, str]:
        got = hashlib.sha256()
        size = 0
        async with http.get(gateway.url + f"/_demo/stream?bytes={SIZE}", headers=key.auth) as reply:
            assert reply.status == 200
            async for chunk in reply.content.iter_chunked(CHUNK):
                got.update(chunk)
                size += len(chunk)
        return size, got.hexdigest()

    (size, digest), baseline, peak = await _peak_rss_during(gateway, download())
    print(f"download {SIZE >> 20} MiB: gateway RSS {baseline >> 20} -> peak {peak >> 20} MiB")
    assert size == SIZE
    assert digest == expected.hexdigest()
    assert peak - baseline < MAX_RSS_GROWTH


async def test_slow_reader_download_does_not_buffer(
    gateway: GatewayProcess, keys: KeyMaker
) -> None:
    """A client that reads slowly must get backpressure, not a gateway holding the body."""
    key = await keys.key(["read"])
    size = 120 * 1024 * 1024
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port, limit=64 * 1024)
    # A tiny receive buffer: the gateway can only run ahead by what it buffers itself.
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    baseline = gateway.process.rss_bytes()
    try:
        writer.write(
            f"GET /_demo/stream?bytes={size} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {key.secret}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        await reader.read(64 * 1024)  # headers and a first piece, then stall
        await asyncio.sleep(1.5)
        stalled = gateway.process.rss_bytes()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    print(f"stalled reader: gateway RSS {baseline >> 20} -> {stalled >> 20} MiB")
    assert stalled - baseline < MAX_RSS_GROWTH
    await _gateway_still_answers(gateway, key.auth)


async def _gateway_still_answers(gateway: GatewayProcess, auth: dict[str, str]) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.url + "/api/read/ok", headers=auth) as reply,
    ):
        assert reply.status == 200
