"""A second gateway whose Postgres is unreachable (and which accepts live keys only).

The session's Postgres is never stopped: this gateway's KEYGATE_DATABASE_URL points at a
closed port, while it shares Redis and KEYGATE_SECRET with the main gateway, so keys the
main gateway verified are in the shared Redis tier and keys it never saw are nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from gateway.keys.format import base62_checksum
from tests.integration.proxy.harness import Stack
from tests.support.configs import gateway_env
from tests.support.credentials import assert_no_key_in
from tests.support.errors import get_error, invalid_token_header
from tests.support.gateway_process import (
    GatewayProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.keys import KeyMaker


@pytest.fixture(scope="module")
def no_db_gateway(stack: Stack) -> Iterator[GatewayProcess]:
    env = gateway_env(
        stack.stores, database_url=f"postgresql://keygate@127.0.0.1:{closed_port()}/x"
    )
    gw = start_gateway(stack.config(accept_envs=["live"]), stack.log_dir, env, name="gateway-no-db")
    with stopped_cleanly(gw):
        yield gw
    assert_no_key_in(gw.process.output(), "the no-db gateway's output")


async def test_key_in_no_cache_is_503_never_401(
    no_db_gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])  # never used: in no cache
    unknown_body = "kg_live_Zz9Zz9Zz" + "B" * 32
    unknown = unknown_body + base62_checksum(unknown_body)
    for presented in (key.secret, key.with_secret("A" * 32), unknown):
        _, reply = await get_error(
            http,
            no_db_gateway.url + "/api/read/x",
            503,
            "auth_unavailable",
            headers={"Authorization": f"Bearer {presented}"},
        )
        retry_after = reply.headers.get("Retry-After", "")
        assert retry_after.isdigit() and int(retry_after) > 0, retry_after
        assert "WWW-Authenticate" not in reply.headers


async def test_key_cached_in_redis_keeps_working_without_postgres(
    gateway: GatewayProcess,
    no_db_gateway: GatewayProcess,
    http: aiohttp.ClientSession,
    keys: KeyMaker,
) -> None:
    key = await keys.key(["read"])
    async with http.get(gateway.url + "/api/read/x", headers=key.auth) as reply:
        assert reply.status == 200  # verified by the main gateway: now in Redis
    async with http.get(no_db_gateway.url + "/api/read/x", headers=key.auth) as reply:
        assert reply.status == 200, await reply.text()
        report = await reply.json()
    assert ["X-Keygate-Key-Id", key.display_prefix] in report["headers"]
    # A wrong secret for that id is still refused as invalid: the cached verifier decides.
    await get_error(
        http,
        no_db_gateway.url + "/api/read/x",
        401,
        "invalid_api_key",
        headers={"Authorization": f"Bearer {key.with_secret('C' * 32)}"},
    )


async def test_revocation_reaches_a_gateway_without_postgres(
    gateway: GatewayProcess,
    no_db_gateway: GatewayProcess,
    http: aiohttp.ClientSession,
    keys: KeyMaker,
) -> None:
    key = await keys.key(["read"])
    async with http.get(gateway.url + "/api/read/x", headers=key.auth) as reply:
        assert reply.status == 200
    async with http.get(no_db_gateway.url + "/api/read/x", headers=key.auth) as reply:
        assert reply.status == 200
    await keys.revoke(key.id)  # writes the tombstone into Redis and publishes
    _, reply = await get_error(
        http, no_db_gateway.url + "/api/read/x", 401, "revoked_api_key", headers=key.auth
    )
    invalid_token_header(reply.headers)


async def test_gateway_refuses_test_keys_when_configured_live_only(
    gateway: GatewayProcess,
    no_db_gateway: GatewayProcess,
    http: aiohttp.ClientSession,
    keys: KeyMaker,
) -> None:
    key = await keys.key(["read"], env="test")
    async with http.get(gateway.url + "/api/read/x", headers=key.auth) as reply:
        assert reply.status == 200  # the main gateway accepts both envs
    # Refused as invalid before any store is asked: not 503 although Postgres is down.
    _, reply = await get_error(
        http, no_db_gateway.url + "/api/read/x", 401, "invalid_api_key", headers=key.auth
    )
    invalid_token_header(reply.headers)


async def test_readiness_reports_postgres_down(
    no_db_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    async with http.get(no_db_gateway.admin_url + "/readyz") as reply:
        body = await reply.json()
        # Down, and reported; still ready: cached keys are served (SPEC §9).
        assert (reply.status, body["status"]) == (200, "ready")
        assert body["stores"]["postgres"] == "down"
    async with http.get(no_db_gateway.admin_url + "/healthz") as reply:
        assert reply.status == 200
