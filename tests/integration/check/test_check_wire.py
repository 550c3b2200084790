"""The check listener on the wire: it is the proxy listener's server (same parser limits,
head timeout and JSON refusals), so bytes its parser refuses are answered like the proxy's
and never echoed, and a body sent with a check is never read as the next check."""

from __future__ import annotations

import asyncio
import json

from tests.integration.proxy.wire import raw_exchange
from tests.support.gateway_process import GatewayProcess
from tests.support.keys import KeyMaker


async def test_parser_refusals_are_json_and_echo_nothing(gateway: GatewayProcess) -> None:
    assert gateway.check_port is not None
    secret_like = "kg_live_" + "A" * 44
    cases = [
        (
            b"GET /nginx HTTP/1.1\r\nHost: x\r\nBad Header " + secret_like.encode() + b"\r\n\r\n",
            400,
        ),
        (b"GET /nginx HTTP/1.1\r\nHost: x\r\nX-Original-URI: /" + b"a" * 9000 + b"\r\n\r\n", 431),
    ]
    for data, status in cases:
        reply = await raw_exchange(gateway.check_port, data)
        assert reply.status == status
        body = json.loads(reply.body)
        assert body["error"]["code"] in ("invalid_request", "headers_too_large")
        assert secret_like not in reply.body.decode()


async def test_a_body_sent_with_a_check_is_not_the_next_check(
    gateway: GatewayProcess, keys: KeyMaker
) -> None:
    """Envoy sends a check with the original method (a POST has Content-Length: 0); a
    sender that adds a body cannot make it parse as a second, allowed check."""
    assert gateway.check_port is not None
    key = await keys.key(["write"])
    smuggled = (
        f"PUT /envoy/api/write/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key.secret}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    first = (
        "POST /envoy/api/write/x HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(smuggled)}\r\nConnection: close\r\n\r\n{smuggled}"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.check_port)
    writer.write(first.encode())
    await writer.drain()
    everything = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    writer.close()
    # One answer: the keyless check's 401. The body was a body, never a second check.
    assert everything.count(b"HTTP/1.1 ") == 1, everything
    assert everything.startswith(b"HTTP/1.1 401 ")
