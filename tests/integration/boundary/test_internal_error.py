"""Failure class 8 (request path): an unexpected exception inside the gateway is a 500
`internal_error` JSON body, a logged traceback without request data, and a counted outcome.

The failure is real, not injected: the `broken` upstream's host has a 64-character label,
which aiohttp's IDNA encoding refuses with a UnicodeError that no refusal maps.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.request

from tests.integration.boundary.rawhttp import exchange_all
from tests.integration.boundary.recorded import Recorded
from tests.integration.proxy.harness import raw_error
from tests.integration.proxy.wire import request_bytes


def _internal_errors(admin_url: str) -> float:
    with urllib.request.urlopen(admin_url + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("keygate_requests_total{")
            and 'outcome="internal_error"' in line
            and 'route="broken"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_unexpected_failure_is_500_logged_and_counted(gw: Recorded) -> None:
    marker = "kg_marker_" + secrets.token_hex(8)
    counted_before = _internal_errors(gw.gateway.admin_url)
    replies, closed = await exchange_all(
        gw.port,
        request_bytes("GET", f"/broken/{marker}?q={marker}", [("X-Marker", marker)]),
        wait=5,
    )
    error = raw_error(replies[0], 500, "internal_error")
    assert closed
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _internal_errors(gw.gateway.admin_url) > counted_before:
            break
        await asyncio.sleep(0.2)
    assert _internal_errors(gw.gateway.admin_url) == counted_before + 1
    entries = [
        json.loads(line)
        for line in gw.gateway.process.stderr().splitlines()
        if line.startswith("{")
    ]
    logged = [
        e
        for e in entries
        if e.get("level") == "error" and error["request_id"] in e.get("message", "")
    ]
    assert logged, gw.gateway.process.tail()
    assert logged[0]["error"] == "UnicodeError"
    assert "Traceback (most recent call last)" in logged[0]["traceback"]
    assert "forward.py" in logged[0]["traceback"]
    # Never the exception's message: a traceback would end "UnicodeError: label empty or
    # too long" (the quoted source line that raises it may appear; the message may not)…
    assert "UnicodeError: " not in gw.gateway.process.stderr()
    # …nor request data in the application log (the access log on stdout names the path).
    assert marker not in gw.gateway.process.stderr()
