"""No key in any output, and one access-log line per proxied request.

One gateway serves only this module: keys are used, revoked and mistyped in every way a
client gets them wrong (query string, URL path, malformed request lines sent on a raw
socket, wrong X-API-Key), then its stdout, stderr and /metrics are searched for every full
key and every key's secret part.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.keys.format import base62_checksum
from tests.integration.observability.conftest import root_of, started
from tests.support.admin_client import AdminClient
from tests.support.credentials import ROOT_TOKEN, bearer
from tests.support.gateway_process import GatewayProcess, UpstreamProcess
from tests.support.stores import Stores

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@pytest.fixture(scope="module")
def log_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, obs_log_dir: Path
) -> Iterator[GatewayProcess]:
    gw = started(stores, echo_upstream, obs_log_dir, "log-gateway")
    try:
        yield gw
    finally:
        if gw.process.alive():
            gw.process.kill()


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send bytes as they are; return whatever comes back before the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def mistype(key: str, at: int = -10) -> str:
    """One character of the secret changed (the checksum no longer matches)."""
    i = len(key) + at
    return key[:i] + ("Z" if key[i] != "Z" else "Y") + key[i + 1 :]


def with_wrong_secret(key: str) -> str:
    """Same prefix and id, another secret, a valid checksum: only argon2 can refuse it."""
    body = key[:-38] + "W" * 32
    return body + base62_checksum(body)


async def test_no_key_in_logs_or_metrics_and_one_access_line_per_request(
    log_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    gw = log_gateway
    root: AdminClient = root_of(http, gw)
    org = await root.create_org("logs")
    good = await root.create_key(org, ["read", "keys:read"])
    doomed = await root.create_key(org, ["read"])
    expected: dict[str, dict[str, Any]] = {}  # request id -> what its access line must say

    async def proxied(
        rid: str,
        path: str,
        status: int,
        outcome: str,
        route: str,
        headers: dict[str, str] | None = None,
        key: dict[str, Any] | None = None,
        method: str = "GET",
    ) -> None:
        sent = {"X-Request-Id": rid, **(headers or {})}
        async with http.request(method, gw.url + path, headers=sent) as reply:
            text = await reply.text()
            assert reply.status == status, (rid, text)
        for secret in sent.values():
            if len(secret) > 40:
                assert secret not in text and secret[-38:-6] not in text, rid
        expected[rid] = {
            "status": status,
            "outcome": outcome,
            "route": route,
            "method": method,
            "path": path.split("?")[0],
            "key": key["key"]["display_prefix"] if key else None,
            "org": key["key"]["org"] if key else None,
        }

    g, d = good["secret"], doomed["secret"]
    await proxied("log-1", "/api/read/x", 200, "allowed", "read", bearer(g), good)
    await proxied("log-2", "/api/read/x", 200, "allowed", "read", {"X-API-Key": d}, doomed)
    await proxied("log-3", "/public/p", 200, "allowed", "public")
    (
        await root.call(
            "POST", f"/orgs/{org}/keys/{doomed['key']['id']}/revoke", {"reason": "test"}
        )
    ).ok()
    for _ in range(40):
        async with http.get(gw.url + "/api/read/x", headers=bearer(d)) as reply:
            if reply.status == 401:
                break
        await asyncio.sleep(0.05)
    # A known key refused (revoked, wrong secret) is named by its display prefix and org.
    await proxied("log-4", "/api/read/x", 401, "revoked_api_key", "read", bearer(d), doomed)
    await proxied("log-5", "/api/read/x", 401, "invalid_api_key", "read", bearer(mistype(g)))
    await proxied(
        "log-6",
        "/api/read/x",
        401,
        "invalid_api_key",
        "read",
        {"X-API-Key": with_wrong_secret(g)},
        good,
    )
    await proxied(
        "log-7", "/api/read/x", 401, "invalid_api_key", "read", {"X-API-Key": mistype(d, -3)}
    )
    await proxied("log-8", f"/api/read/x?api_key={g}&key={d}", 401, "missing_api_key", "read")
    await proxied("log-9", f"/api/read/{g}", 401, "missing_api_key", "read")
    await proxied(
        "log-10",
        "/api/read/x",
        400,
        "invalid_request",
        "read",
        {"Authorization": f"Bearer {g}", "X-API-Key": d},
    )
    await proxied("log-11", f"/nowhere/{g}", 404, "no_route", "none", bearer(g))
    await proxied(
        "log-12", "/api/read/x", 401, "missing_api_key", "read", {"Authorization": f"Basic {g}"}
    )

    # The admin listener: a key as principal, a mistyped one, a revoked one, and a key in
    # the query. Each request has its line: operation, principal, the (refused) key.
    admin_expected: dict[str, dict[str, Any]] = {}

    async def admin(
        rid: str,
        client: AdminClient,
        path: str,
        status: int,
        operation: str,
        principal: str | None,
        key: dict[str, Any] | None,
        params: dict[str, str] | None = None,
    ) -> None:
        reply = await client.call(
            "GET", path, headers={"X-Request-Id": rid, "User-Agent": "ops-test/1"}, params=params
        )
        assert reply.status == status, (rid, reply.text)
        admin_expected[rid] = {
            "listener": "admin",
            "method": "GET",
            "path": "/admin/v1" + path,
            "operation": operation,
            "status": status,
            "principal": principal,
            "key": key["key"]["display_prefix"] if key else None,
            "org": key["key"]["org"] if key else None,
            "client": "127.0.0.1",
            "user_agent": "ops-test/1",
            "outcome": "ok" if status < 400 else "unauthorized",
        }

    good_prefix = good["key"]["display_prefix"]
    await admin(
        "adm-1", root.as_(g), f"/orgs/{org}/keys", 200, "listKeys", f"key:{good_prefix}", good
    )
    await admin("adm-2", root.as_(mistype(g)), "/orgs", 401, "listOrgs", None, None)
    await admin("adm-3", root.as_(d), "/orgs", 401, "listOrgs", None, doomed)
    await admin(
        "adm-4", root, f"/orgs/{org}/keys", 200, "listKeys", "root", None, params={"key": g}
    )

    # Requests the HTTP parser refuses, with the key in the broken part.
    host = f"Host: 127.0.0.1:{gw.proxy_port}\r\n".encode()
    broken = [
        b"GET /api/read/" + g.encode() + b" HTTP/1.1 trailing-junk\r\n" + host + b"\r\n",
        b"GET /api/read/x?k=" + g.encode() + b"\x00 HTTP/1.1\r\n" + host + b"\r\n",
        b"GET /api/read/x HTTP/1.1\r\n" + host + b"X-API-Key: " + g.encode() + b"\x01\r\n\r\n",
        b"GET /api/read/x HTTP/1.1\r\n"
        + host
        + b"Authorization: Bearer "
        + g.encode()
        + b"\r\nX-Pad: "
        + b"a" * 70000
        + b"\r\n\r\n",
        b"G\x01T /" + g.encode() + b" HTTP/1.1\r\n" + host + b"\r\n",
        b"GET /api/read/x HTTP/9.9\r\nX-API-Key: " + g.encode() + b"\r\n\r\n",
        b"GET /api/read/x HTTP/1.1\r\n" + host + b"Content-Length: " + g.encode() + b"\r\n\r\n",
    ]
    for data in broken:
        answer = raw_exchange(gw.proxy_port, data)
        assert re.match(rb"HTTP/1\.[01] 4\d\d ", answer), answer[:200]
        assert g.encode() not in answer and g[-38:-6].encode() not in answer, answer[:300]

    async with http.get(gw.admin_url + "/metrics") as reply:
        metrics_text = await reply.text()

    gw.process.stop(expect_code=0)  # flushes everything it buffered
    output = gw.process.output()
    secrets_sent = {
        "good key": g,
        "revoked key": d,
        "mistyped good": mistype(g),
        "wrong secret": with_wrong_secret(g),
        "mistyped revoked": mistype(d, -3),
        "good secret part": g[-38:-6],
        "revoked secret part": d[-38:-6],
        "root token": ROOT_TOKEN,
    }
    for what, value in secrets_sent.items():
        assert value not in output, f"{what} found in the gateway's output"
        assert value not in metrics_text, f"{what} found in /metrics"

    lines = [line for line in gw.process.stdout().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # stdout is the access log, all JSON
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_id.setdefault(record["request_id"], []).append(record)
    for rid, want in expected.items():
        assert len(by_id.get(rid, [])) == 1, f"{rid}: {by_id.get(rid)}"
        record = by_id[rid][0]
        assert {
            "time",
            "request_id",
            "method",
            "path",
            "route",
            "status",
            "outcome",
            "key",
            "org",
        } <= set(record), record
        duration = [v for k, v in record.items() if k.startswith("duration")]
        assert len(duration) == 1 and isinstance(duration[0], int | float), record
        assert duration[0] >= 0
        assert TIME.fullmatch(record["time"]), record
        got = {k: record[k] for k in want}
        if want["path"].startswith("/api/read/kg_") or want["path"].startswith("/nowhere/"):
            want = {**want, "path": want["path"][:-38] + "[redacted]"}
        assert got == want, rid
    tagged = [r for r in records if str(r["request_id"]).startswith("log-")]
    assert len(tagged) == len(expected)
    for rid, want in admin_expected.items():
        assert len(by_id.get(rid, [])) == 1, f"{rid}: {by_id.get(rid)}"
        record = by_id[rid][0]
        assert TIME.fullmatch(record["time"]) and record["duration_ms"] >= 0, record
        assert {k: record[k] for k in want} == want, rid
