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
    ("headers", "status"),
    [
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),  # sandboxed frames, data: URLs
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),  # another port of this host
        ({"Origin": "http://127.0.0.1:1"}, 403),
        ({}, 201),  # curl, scripts: no browser headers
        ({"Sec-Fetch-Site": "none"}, 201),  # typed into the address bar
        ({"Origin": "SELF", "Sec-Fetch-Site": "same-origin"}, 201),  # its own pages
    ],
)
async def test_loopback_anonymous_root_refuses_a_browsers_cross_site_change(
    loopback_gateway: GatewayProcess,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    status: int,
) -> None:
    """Anonymous root is ambient authority, like a cookie: any web page the developer's
    browser shows could post to the loopback admin port. Such a post (a form with a JSON
    text/plain body needs no preflight) is refused before anything is created."""
    slug = unique_slug("xsite")
    if headers.get("Origin") == "SELF":
        headers = {**headers, "Origin": loopback_gateway.admin_url}
    async with http.post(
        loopback_gateway.admin_url + "/admin/v1/orgs",
        data=f'{{"slug": "{slug}"}}',
        headers={"Content-Type": "text/plain", **headers},
    ) as reply:
        body = await reply.text()
        assert reply.status == status, body
    if status == 403:
        assert '"csrf_failed"' in body
        listed = await AdminClient(http, loopback_gateway.admin_url, None).call("GET", "/orgs")
        assert slug not in listed.text
    async with http.get(
        loopback_gateway.admin_url + "/admin/v1/orgs", headers={"Origin": "https://evil.example"}
    ) as reply:
        assert reply.status == 200  # reads are not changes (and CORS keeps them unreadable)


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
