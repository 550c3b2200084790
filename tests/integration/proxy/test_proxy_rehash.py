"""argon2 parameter upgrades take effect on the next successful verify (issue 11 §7).

Keys are made with the session's cheap parameters (the main gateway's config); a second
gateway is configured with other ones. Its first successful verify of such a key stores
the secret hashed with its own parameters, in place, without a new version (nothing about
the key changed, so nothing is invalidated); a wrong secret never rewrites the hash.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from argon2 import PasswordHasher

from gateway.keys.format import ID_LENGTH, parse_key
from tests.integration.proxy.harness import Stack
from tests.support.configs import gateway_env
from tests.support.credentials import assert_no_key_in
from tests.support.db import fetch
from tests.support.errors import get_error
from tests.support.gateway_process import GatewayProcess, start_gateway, stopped_cleanly
from tests.support.keys import KeyMaker, MadeKey

# Not the session's CHEAP_ARGON2 (m=1024, t=1): what the stored hashes must move to.
UPGRADED = {"time_cost": 2, "memory_kib": 2048, "parallelism": 1}
UPGRADED_TAG = "$m=2048,t=2,p=1$"


@pytest.fixture(scope="module")
def upgraded_gateway(stack: Stack) -> Iterator[GatewayProcess]:
    config = stack.config()
    config["keys"] = {**config["keys"], "argon2": UPGRADED}
    gw = start_gateway(config, stack.log_dir, gateway_env(stack.stores), name="gateway-rehash")
    with stopped_cleanly(gw):
        yield gw
    assert_no_key_in(gw.process.output(), "the rehashing gateway's output")


async def _row(stack: Stack, key: MadeKey) -> dict[str, Any]:
    rows = await fetch(
        stack.stores.database_url,
        "SELECT secret_hash, version, updated_at FROM api_keys WHERE id = $1",
        key.id,
    )
    return dict(rows[0])


async def _status(http: aiohttp.ClientSession, gw: GatewayProcess, presented: str) -> int:
    async with http.get(
        gw.url + "/api/read/x", headers={"Authorization": f"Bearer {presented}"}
    ) as reply:
        await reply.read()
        return reply.status


async def test_a_successful_verify_rehashes_with_the_configured_parameters(
    stack: Stack,
    upgraded_gateway: GatewayProcess,
    keys: KeyMaker,
    http: aiohttp.ClientSession,
) -> None:
    key = await keys.key(["read"])
    before = await _row(stack, key)
    assert "$m=1024,t=1,p=1$" in before["secret_hash"]

    # Wrong secrets (the hash is read and verified against) never rewrite it.
    for _ in range(2):
        await get_error(
            http,
            upgraded_gateway.url + "/api/read/x",
            401,
            "invalid_api_key",
            headers={"Authorization": f"Bearer {key.with_secret('W' * 32)}"},
        )
    assert await _row(stack, key) == before

    assert await _status(http, upgraded_gateway, key.secret) == 200
    after = await _row(stack, key)
    assert UPGRADED_TAG in after["secret_hash"], after["secret_hash"]
    secret = parse_key(key.secret, {key.env: key.display_prefix[:-ID_LENGTH]}).secret
    assert PasswordHasher().verify(after["secret_hash"], secret)
    # Not a change of the key: same version (so no invalidation published), same updated_at.
    assert (after["version"], after["updated_at"]) == (before["version"], before["updated_at"])

    assert await _status(http, upgraded_gateway, key.secret) == 200  # the key still works
    assert await _status(http, upgraded_gateway, key.with_secret("V" * 32)) == 401
    assert (await _row(stack, key))["secret_hash"] == after["secret_hash"]


async def test_a_current_hash_is_left_alone(
    stack: Stack, gateway: GatewayProcess, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    key = await keys.key(["read"])
    before = await _row(stack, key)
    assert await _status(http, gateway, key.secret) == 200  # the cheap-parameter gateway
    assert await _row(stack, key) == before
