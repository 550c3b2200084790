"""deploy/caddy/Caddyfile, as shipped (addresses rendered to test ports), in a real Caddy
in front of a recording upstream, asking Keygate's /forward-auth check (SPEC §12)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import aiohttp

from gateway.keys.errors import Conflict
from tests.integration.edge.conftest import caddy_site, edge_routes
from tests.integration.edge.support import FORGED, keygate_fields, never_seen, refusal, seen
from tests.integration.user_tokens.conftest import ALICE, AUDIENCE, ORG, running_idp
from tests.support.configs import gateway_env
from tests.support.edge_proxies import running_caddy
from tests.support.gateway_process import (
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.keys import ACTOR, KeyMaker, key_maker, unknown_key
from tests.support.oidc_provider import access_token
from tests.support.recording_upstream import SEEN_HEADER, RecordingUpstream
from tests.support.stores import Stores


async def test_allowed_request_reaches_the_api_with_keygate_identity_only(
    caddy: str, keys: KeyMaker, edge_upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    key = await keys.key(["read"])
    marker = uuid.uuid4().hex
    headers = {**key.auth, **FORGED, "X-Keygate-Key-Id": "forged", "x.keygate-env": "test"}
    async with http.get(f"{caddy}/api/read/{marker}?page=2", headers=headers) as reply:
        assert reply.status == 200, await reply.text()
        assert SEEN_HEADER in reply.headers
        request_id = reply.headers["X-Request-Id"]
    record = seen(edge_upstream, request_id)
    assert record.head.target == f"/api/read/{marker}?page=2"
    # Caddy (Go) writes field names in canonical form.
    assert keygate_fields(record) == {
        "X-Keygate-Credential": ["key"],
        "X-Keygate-Org": [key.org],
        "X-Keygate-Key-Id": [key.display_prefix],
        "X-Keygate-Scopes": ["read"],
        "X-Keygate-Env": ["live"],
    }
    assert not record.head.all("Authorization") and not record.head.all("X-API-Key")
    assert record.head.all("X-Request-Id") == [request_id]


async def test_x_api_key_is_checked_and_kept_from_the_api(
    caddy: str, keys: KeyMaker, edge_upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    key = await keys.key(["read"])
    secret = key.auth["Authorization"].removeprefix("Bearer ")
    async with http.get(f"{caddy}/api/read/x-api-key", headers={"X-API-Key": secret}) as reply:
        assert reply.status == 200, await reply.text()
        request_id = reply.headers["X-Request-Id"]
    record = seen(edge_upstream, request_id)
    assert not record.head.all("X-API-Key") and not record.head.all("Authorization")
    assert keygate_fields(record)["X-Keygate-Key-Id"] == [key.display_prefix]


async def test_user_token_reaches_the_api_with_the_identity_keygate_proxy_sends(
    stores: Stores,
    edge_upstream: RecordingUpstream,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A user token's answer has no X-Keygate-Key-Id or -Env: Caddy must not invent them
    (2.6 copies an absent field as its placeholder's text), nor pass the client's own."""
    (tmp_path / "idp").mkdir()
    with running_idp(tmp_path / "idp") as idp:
        config = edge_routes(f"http://127.0.0.1:{edge_upstream.port}")
        config["user_tokens"] = [
            {"issuer": idp.issuer, "audience": AUDIENCE, "algorithms": ["RS256"], "leeway": "5s"}
        ]
        gw = start_gateway(config, tmp_path / "gw", gateway_env(stores), name="tokens", check=True)
        with stopped_cleanly(gw):
            async with key_maker(gw.config_path, gw.env) as maker:
                # The package shares one database: an earlier test may have made the org.
                with contextlib.suppress(Conflict):
                    await maker.service.create_org(ACTOR, ORG)
            auth = {"Authorization": f"Bearer {access_token(idp.running, ALICE)}"}
            forged = {**FORGED, "X-Keygate-Key-Id": "forged", "X_Keygate_Env": "live"}
            site = caddy_site(f"127.0.0.1:{gw.check_port}", f"127.0.0.1:{edge_upstream.port}")
            with running_caddy(site, tmp_path / "caddy") as port:
                async with http.get(
                    f"http://127.0.0.1:{port}/api/read/token", headers={**auth, **forged}
                ) as reply:
                    assert reply.status == 200, await reply.text()
                    through_caddy = seen(edge_upstream, reply.headers["X-Request-Id"])
            async with http.get(f"{gw.url}/api/read/token", headers=auth) as reply:
                assert reply.status == 200, await reply.text()
                direct = seen(edge_upstream, reply.headers["X-Request-Id"])
    identity = keygate_fields(through_caddy)
    assert identity == keygate_fields(direct)
    assert identity["X-Keygate-Credential"] == ["user"]
    assert identity["X-Keygate-Subject"] == [ALICE.client_id]
    assert not through_caddy.head.all("Authorization")


async def test_rate_limit_headers_and_429_reach_the_client(
    caddy: str, keys: KeyMaker, edge_upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    key = await keys.key(["read"])
    async with http.get(f"{caddy}/api/read/unlimited", headers=key.auth) as reply:
        assert reply.status == 200
        assert not [name for name in reply.headers if name.lower().startswith("ratelimit-")]
    for remaining in ("1", "0"):
        async with http.get(f"{caddy}/api/limited/x", headers=key.auth) as reply:
            assert reply.status == 200
            assert reply.headers.getall("RateLimit-Limit") == ["2"]
            assert reply.headers.getall("RateLimit-Remaining") == [remaining]
            assert int(reply.headers["RateLimit-Reset"]) > 0
    marker = uuid.uuid4().hex
    async with http.get(f"{caddy}/api/limited/{marker}", headers=key.auth) as reply:
        await refusal(reply, 429, "rate_limited")
        assert int(reply.headers["Retry-After"]) > 0
        assert reply.headers["RateLimit-Remaining"] == "0"
    never_seen(edge_upstream, marker)


async def test_revocation_takes_effect_through_caddy_within_a_second(
    caddy: str, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    key = await keys.key(["read"])
    async with http.get(f"{caddy}/api/read/warm", headers=key.auth) as reply:
        assert reply.status == 200
    await keys.revoke(key.id)
    revoked_at = time.monotonic()
    while True:
        async with http.get(f"{caddy}/api/read/after", headers=key.auth) as reply:
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
    """forward_auth's own 502 becomes the Caddyfile's 503 auth_unavailable."""
    key = await keys.key(["read"])
    site = caddy_site(f"127.0.0.1:{closed_port()}", f"127.0.0.1:{edge_upstream.port}")
    with running_caddy(site, tmp_path / "caddy") as port:
        marker = uuid.uuid4().hex
        async with http.get(
            f"http://127.0.0.1:{port}/api/read/{marker}", headers=key.auth
        ) as reply:
            body = await refusal(reply, 503, "auth_unavailable")
            assert reply.headers["Retry-After"] == "1"
            assert body["error"]["request_id"]
        never_seen(edge_upstream, marker)


async def test_keygate_own_503_reaches_the_client(
    stores: Stores,
    edge_upstream: RecordingUpstream,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A key in no cache while PostgreSQL is down: Keygate's 503 auth_unavailable, with its
    Retry-After, passed on as Keygate sent it."""
    config = edge_routes(f"http://127.0.0.1:{edge_upstream.port}")
    env = gateway_env(stores, database_url=f"postgresql://keygate@127.0.0.1:{closed_port()}/x")
    gw = start_gateway(config, tmp_path / "gw", env, name="pg-down", check=True)
    with stopped_cleanly(gw):
        site = caddy_site(f"127.0.0.1:{gw.check_port}", f"127.0.0.1:{edge_upstream.port}")
        with running_caddy(site, tmp_path / "caddy") as port:
            async with http.get(
                f"http://127.0.0.1:{port}/api/read/x",
                headers={"Authorization": f"Bearer {unknown_key()}"},
            ) as reply:
                await refusal(reply, 503, "auth_unavailable")
                assert int(reply.headers["Retry-After"]) >= 1
