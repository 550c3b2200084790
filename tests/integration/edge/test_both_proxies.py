"""What the shipped nginx and Caddy configs must both do alike in front of Keygate's
check listener: no identity (and no forged one) on public routes, bodies passed whole,
and every refusal reaching the client as Keygate's own proxy would send it."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest
from yarl import URL

from tests.integration.edge.support import FORGED, keygate_fields, never_seen, refusal, seen
from tests.support.gateway_process import GatewayProcess
from tests.support.keys import KeyMaker, unknown_key
from tests.support.recording_upstream import RecordingUpstream


async def test_public_route_gets_no_identity_and_no_forged_one(
    edge: str, edge_upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{edge}/public/status", headers=FORGED) as reply:
        assert reply.status == 200
        request_id = reply.headers["X-Request-Id"]
    assert keygate_fields(seen(edge_upstream, request_id)) == {}


async def test_a_body_passes_to_the_api_whole(
    edge: str, keys: KeyMaker, edge_upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    key = await keys.key(["write"])
    body = b"x" * 70_000

    async def chunks() -> aiohttp.payload.AsyncIterablePayload:  # type: ignore[misc]
        yield body[:30_000]
        yield body[30_000:]

    for data in (body, chunks()):
        async with http.post(f"{edge}/api/write/doc", headers=key.auth, data=data) as reply:
            assert reply.status == 200, await reply.text()
            request_id = reply.headers["X-Request-Id"]
        deadline = time.monotonic() + 5
        record = seen(edge_upstream, request_id)
        while not record.complete and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            record = seen(edge_upstream, request_id)
        assert record.body == body


@pytest.mark.parametrize(
    ("method", "path", "credential", "status", "code"),
    [
        ("GET", "/api/read/{marker}", None, 401, "missing_api_key"),
        ("GET", "/api/read/{marker}", "unknown", 401, "invalid_api_key"),
        ("POST", "/api/write/{marker}", "reader", 403, "insufficient_scope"),
        ("GET", "/api/orgs/not-mine/{marker}", "reader", 403, "wrong_org"),
        ("GET", "/nowhere/{marker}", "reader", 404, "no_route"),
        ("GET", "/api/read/a%2Fb/{marker}", "reader", 400, "invalid_path"),
    ],
)
async def test_refusals_reach_the_client_as_keygate_sent_them(
    edge: str,
    edge_gateway: GatewayProcess,
    keys: KeyMaker,
    edge_upstream: RecordingUpstream,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    credential: str | None,
    status: int,
    code: str,
) -> None:
    key = await keys.key(["read"])
    headers = {}
    if credential == "reader":
        headers = key.auth
    elif credential == "unknown":
        headers = {"Authorization": f"Bearer {unknown_key()}"}
    marker = uuid.uuid4().hex
    target = path.format(marker=marker)
    url = URL(edge + target, encoded=True)
    async with http.request(method, url, headers=headers) as reply:
        body = await refusal(reply, status, code)
        # The same answer as Keygate's proxy gives for this request.
        direct_url = URL(edge_gateway.url + target, encoded=True)
        async with http.request(method, direct_url, headers=headers) as direct:
            expected = await direct.json(content_type=None)
            assert direct.status == status
            assert body["error"]["message"] == expected["error"]["message"]
            assert reply.headers.get("WWW-Authenticate") == direct.headers.get("WWW-Authenticate")
    never_seen(edge_upstream, marker)
