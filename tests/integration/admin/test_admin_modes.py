"""When the admin API runs at all: with a token, anonymously on loopback by opt-in, or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.app import admin_api_mode
from gateway.config import AdminConfig, Config, ListenConfig
from tests.support.admin_client import AdminClient, unique_slug
from tests.support.configs import gateway_env, operator_config
from tests.support.errors import assert_error
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.stores import Stores


@pytest.fixture(scope="module")
def tokenless_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, admin_log_dir: Path
) -> Iterator[GatewayProcess]:
    """No KEYGATE_ADMIN_TOKEN and no loopback opt-in: the admin API must stay off."""
    gw = start_gateway(
        operator_config(echo_upstream.url, closed_port()),
        admin_log_dir,
        gateway_env(stores, admin_token=""),
        name="tokenless-gateway",
    )
    with stopped_cleanly(gw):
        yield gw


@pytest.fixture(scope="module")
def loopback_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, admin_log_dir: Path
) -> Iterator[GatewayProcess]:
    config = operator_config(
        echo_upstream.url, closed_port(), admin={"allow_unauthenticated_loopback": True}
    )
    gw = start_gateway(
        config, admin_log_dir, gateway_env(stores, admin_token=""), name="loopback-gateway"
    )
    with stopped_cleanly(gw):
        yield gw


async def test_without_a_token_the_admin_api_is_off(
    tokenless_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    client = AdminClient(http, tokenless_gateway.admin_url, None)
    for method, path in (
        ("GET", "/orgs"),
        ("POST", "/orgs"),
        ("GET", "/openapi.json"),
        ("GET", "/orgs/acme/keys"),
    ):
        reply = await client.call(method, path)
        assert reply.status == 404, reply.text
    with_some_token = await client.as_("anything").call("GET", "/orgs")
    assert with_some_token.status == 404
    for path in ("/healthz", "/readyz", "/metrics"):
        reply = await client.call("GET", path)
        assert reply.status == 200, (path, reply.text)
    assert "admin API disabled" in tokenless_gateway.process.stderr()


async def test_loopback_opt_in_allows_anonymous_root(
    loopback_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    anonymous = AdminClient(http, loopback_gateway.admin_url, None)
    slug = unique_slug("loopback")
    (await anonymous.call("POST", "/orgs", {"slug": slug})).ok(201)
    created = await anonymous.create_key(slug, ["read"])
    assert created["key"]["created_by"] == "root"
    [*_, first] = await anonymous.audit(slug)
    assert first["principal"] == "root" and first["action"] == "org.create"
    # A credential that is presented is still checked: a bad one is refused.
    assert_error(await anonymous.as_("not-a-key").call("GET", "/orgs"), 401, "unauthorized")


@pytest.mark.parametrize(
    ("token", "flag", "admin", "mode"),
    [
        ("tok", False, "0.0.0.0:8081", "token"),
        ("tok", True, "127.0.0.1:8081", "token"),
        (None, True, "127.0.0.1:8081", "loopback"),
        (None, True, "[::1]:8081", "loopback"),
        (None, True, "localhost:8081", "loopback"),
        (None, True, "0.0.0.0:8081", None),
        (None, True, "10.0.0.5:8081", None),
        (None, True, ":8081", None),
        (None, False, "127.0.0.1:8081", None),
        ("", True, "0.0.0.0:8081", None),
    ],
)
def test_admin_api_mode(token: str | None, flag: bool, admin: str, mode: str | None) -> None:
    config = Config(
        admin_token=token,
        listen=ListenConfig(admin=admin),
        admin=AdminConfig(allow_unauthenticated_loopback=flag),
    )
    assert admin_api_mode(config) == mode
