"""The gateway as a process: what it logs, `--workers`, and shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from tests.integration.proxy.harness import Stack, raw_error
from tests.integration.proxy.wire import (
    bearer,
    close_writer,
    raw_request,
    read_response,
    request_bytes,
)
from tests.support.configs import gateway_env
from tests.support.credentials import assert_no_key_in
from tests.support.gateway_process import GatewayProcess, start_gateway
from tests.support.keys import KeyMaker


def access_lines(gateway: GatewayProcess) -> list[dict[str, object]]:
    lines = []
    for line in gateway.process.stdout().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "request_id" in record:
            lines.append(record)
    return lines


async def _until_logged(gateway: GatewayProcess, request_id: str) -> dict[str, object]:
    for _ in range(100):
        found = [r for r in access_lines(gateway) if r["request_id"] == request_id]
        if found:
            return found[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no access-log line for {request_id}")


async def test_access_log_names_the_key_by_display_prefix_only(
    gateway: GatewayProcess, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    reply = await raw_request(
        gateway.proxy_port,
        "GET",
        f"/api/read/logged?api_key={key.secret}",
        [bearer(key.secret), ("X-Request-Id", "log-check-1")],
    )
    assert reply.status == 200
    record = await _until_logged(gateway, "log-check-1")
    assert record["key"] == key.display_prefix
    assert record["org"] == key.org
    assert record["status"] == 200
    assert record["outcome"] == "allowed"
    assert record["route"] == "read"
    assert record["path"] == "/api/read/logged"
    wrong = key.with_secret("Q" * 32)
    refused = await raw_request(
        gateway.proxy_port,
        "GET",
        "/api/read/logged",
        [bearer(wrong), ("X-Request-Id", "log-check-2")],
    )
    assert refused.status == 401
    record = await _until_logged(gateway, "log-check-2")
    assert record["outcome"] == "invalid_api_key"
    assert_no_key_in(gateway.process.output(), "the gateway's output")


async def test_requests_the_parser_refuses_never_log_the_key(
    gateway: GatewayProcess, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    k = key.secret.encode()
    broken = [
        b"GET /api/read/x?key=" + k + b" HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET /api/read/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + k
        + b"\r\nBroken\r\n\r\n",
        b"GET /api/read/x HTTP/1.1\r\nHost: x\r\nX-API-Key: " + k + b"\x00\r\n\r\n",
        b"GET /" + k + b"\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G\x01T /api/read/x HTTP/1.1\r\nAuthorization: Bearer " + k + b"\r\n\r\n",
        b"GET /api/read/x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n"
        b"Authorization: Bearer " + k + b"\r\n\r\n",
        b"GET /api/read/x HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + k + b"\r\n\r\n",
    ]
    for data in broken:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
        try:
            writer.write(data)
            await writer.drain()
            reply = await asyncio.wait_for(read_response(reader), 5)
        finally:
            await close_writer(writer)
        # Refused by the HTTP parser, answered like every other refusal (§3) ...
        # (an over-long header line is 431 headers_too_large, the rest 400 invalid_request)
        too_large = b"X-Long" in data
        error = raw_error(
            reply,
            431 if too_large else 400,
            "headers_too_large" if too_large else "invalid_request",
        )
        # ... and without echoing what was sent.
        assert k not in reply.body and key.secret not in error["message"]
        assert all(key.secret not in v for _, v in reply.headers)
    await asyncio.sleep(0.2)
    assert_no_key_in(gateway.process.output(), "the gateway's output")
    assert gateway.healthy()


async def test_workers_serve_and_exit_cleanly_on_sigterm(stack: Stack, keys: KeyMaker) -> None:
    key = await keys.key(["read"])
    gw = start_gateway(
        stack.config(),
        stack.log_dir,
        gateway_env(stack.stores),
        name="gateway-2-workers",
        workers=2,
    )
    try:
        connector = aiohttp.TCPConnector(force_close=True)  # new connections spread over workers
        async with aiohttp.ClientSession(connector=connector) as http:

            async def one(i: int) -> int:
                async with http.get(gw.url + f"/api/read/w{i}", headers=key.auth) as reply:
                    report = await reply.json()
                    assert report["path"] == f"/api/read/w{i}"
                    return reply.status

            statuses = await asyncio.gather(*(one(i) for i in range(60)))
            assert statuses == [200] * 60

            # A request in flight when SIGTERM arrives still completes (drain).
            slow = asyncio.create_task(
                _get_status(http, gw.url + "/_demo/slow?seconds=0.6", key.auth)
            )
            await asyncio.sleep(0.2)
            signalled = time.monotonic()
            gw.process.proc.terminate()
            assert await slow == 200
        code = await asyncio.to_thread(gw.process.stop, 0)
        print(f"2 workers exited {code} {time.monotonic() - signalled:.2f}s after SIGTERM")
    except BaseException:
        gw.process.kill()
        raise
    assert_no_key_in(gw.process.output(), "the 2-worker gateway's output")
    # Nothing listens any more.
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", gw.proxy_port)
    except OSError:
        pass
    else:
        await close_writer(writer)
        raise AssertionError("the proxy port still accepts connections after exit")


async def _get_status(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    async with http.get(url, headers=headers) as reply:
        await reply.read()
        return reply.status


async def test_single_worker_drains_in_flight_request_on_sigterm(
    stack: Stack, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    gw = start_gateway(
        stack.config(), stack.log_dir, gateway_env(stack.stores), name="gateway-drain"
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy_port)
        writer.write(
            request_bytes(
                "GET", "/_demo/slow?seconds=0.6", [bearer(key.secret)], port=gw.proxy_port
            )
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        gw.process.proc.terminate()
        head = await asyncio.wait_for(reader.readline(), 5)
        await close_writer(writer)
        assert head.startswith(b"HTTP/1.1 200"), head
        await asyncio.to_thread(gw.process.stop, 0)
    except BaseException:
        gw.process.kill()
        raise
