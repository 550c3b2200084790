"""deploy/nginx/keygate.conf, as shipped (addresses rendered to test ports), in a real nginx
in front of a recording upstream, asking Keygate's /nginx check (SPEC §12)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp

from tests.integration.edge.conftest import edge_routes, nginx_site
from tests.integration.edge.support import FORGED, keygate_fields, never_seen, refusal, seen
from tests.support.configs import gateway_env
from tests.support.edge_proxies import running_nginx
from tests.support.gateway_process import (
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.keys import KeyMaker, unknown_key
from tests.support.recording_upstream import SEEN_HEADER, RecordingUpstream
from tests.support.stores import Stores


async def test_allowed_request_reaches_the_api_with_keygate_identity_only(
    nginx: str, keys: KeyMaker, edge_upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    key = await keys.key(["read"])
    marker = uuid.uuid4().hex
    async with http.get(
        f"{nginx}/api/read/{marker}?page=2", headers={**key.auth, **FORGED}
    ) as reply:
        assert reply.status == 200, await reply.text()
        assert SEEN_HEADER in reply.headers
        request_id = reply.headers["X-Request-Id"]
    record = seen(edge_upstream, request_id)
    assert record.head.target == f"/api/read/{marker}?page=2"
    assert keygate_fields(record) == {
        "X-Keygate-Credential": ["key"],
        "X-Keygate-Org": [key.org],
        "X-Keygate-Key-Id": [key.display_prefix],
        "X-Keygate-Scopes": ["read"],
        "X-Keygate-Env": ["live"],
    }
    assert not record.head.all("Authorization") and not record.head.all("X-API-Key")
    assert record.head.all("X-Request-Id") == [request_id]


async def test_rate_limit_headers_and_429_reach_the_client(
    nginx: str, keys: KeyMaker, edge_upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    key = await keys.key(["read"])
    for remaining in ("1", "0"):
        async with http.get(f"{nginx}/api/limited/x", headers=key.auth) as reply:
            assert reply.status == 200
            assert reply.headers["RateLimit-Limit"] == "2"
            assert reply.headers["RateLimit-Remaining"] == remaining
    marker = uuid.uuid4().hex
    async with http.get(f"{nginx}/api/limited/{marker}", headers=key.auth) as reply:
        await refusal(reply, 429, "rate_limited")
        assert int(reply.headers["Retry-After"]) > 0
        assert reply.headers["RateLimit-Remaining"] == "0"
    never_seen(edge_upstream, marker)


async def test_revocation_takes_effect_through_nginx_within_a_second(
    nginx: str, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    key = await keys.key(["read"])
    async with http.get(f"{nginx}/api/read/warm", headers=key.auth) as reply:
        assert reply.status == 200
    await keys.revoke(key.id)
    revoked_at = time.monotonic()
    while True:
        async with http.get(f"{nginx}/api/read/after", headers=key.auth) as reply:
            if reply.status == 401:
                await refusal(reply, 401, "revoked_api_key")
                break
            assert reply.status == 200
        assert time.monotonic() - revoked_at < 1.0, "still allowed 1 s after the revoke"
        await asyncio.sleep(0.02)


async def test_unreachable_keygate_is_503_never_a_pass(
    edge_upstream: RecordingUpstream,
    keys: KeyMaker,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    key = await keys.key(["read"])
    site = nginx_site(f"127.0.0.1:{closed_port()}", f"127.0.0.1:{edge_upstream.port}")
    with running_nginx(site, tmp_path / "nginx") as port:
        marker = uuid.uuid4().hex
        async with http.get(
            f"http://127.0.0.1:{port}/api/read/{marker}", headers=key.auth
        ) as reply:
            body = await reply.json(content_type=None)
            assert reply.status == 503, body
            assert body["error"]["code"] == "auth_unavailable"
            assert reply.headers["Retry-After"] == "1"
        never_seen(edge_upstream, marker)


async def test_keygate_own_503_reaches_the_client(
    stores: Stores,
    edge_upstream: RecordingUpstream,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A key in no cache while PostgreSQL is down: Keygate's 503 auth_unavailable, with its
    Retry-After, not nginx's 500."""
    config = edge_routes(f"http://127.0.0.1:{edge_upstream.port}")
    env = gateway_env(stores, database_url=f"postgresql://keygate@127.0.0.1:{closed_port()}/x")
    gw = start_gateway(config, tmp_path / "gw", env, name="pg-down", check=True)
    with stopped_cleanly(gw):
        site = nginx_site(f"127.0.0.1:{gw.check_port}", f"127.0.0.1:{edge_upstream.port}")
        with running_nginx(site, tmp_path / "nginx") as port:
            async with http.get(
                f"http://127.0.0.1:{port}/api/read/x",
                headers={"Authorization": f"Bearer {unknown_key()}"},
            ) as reply:
                await refusal(reply, 503, "auth_unavailable")
                assert int(reply.headers["Retry-After"]) >= 1
