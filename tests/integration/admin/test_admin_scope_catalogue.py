"""The scopes catalogue through the admin API (SPEC §7): a gateway whose config lists the
scopes keys may carry refuses any other at create and update with 400 naming the field
and the nearest known scope, and writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.admin_client import AdminClient
from tests.support.configs import gateway_env, operator_config
from tests.support.credentials import ROOT_TOKEN
from tests.support.errors import assert_error
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.stores import Stores

CATALOGUE = {
    "read": "Read things",
    "write": "Change things",
    "workflows:run": "Start workflows",
    "keys:manage": "Manage the org's keys",
}


@pytest.fixture(scope="module")
def catalogue_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, admin_log_dir: Path
) -> Iterator[GatewayProcess]:
    config = operator_config(echo_upstream.url, closed_port(), scopes=CATALOGUE)
    gw = start_gateway(config, admin_log_dir, gateway_env(stores), name="catalogue-gateway")
    with stopped_cleanly(gw):
        yield gw


@pytest.fixture
def admin(http: aiohttp.ClientSession, catalogue_gateway: GatewayProcess) -> AdminClient:
    return AdminClient(http, catalogue_gateway.admin_url, ROOT_TOKEN)


async def test_create_refuses_an_uncatalogued_scope_naming_the_nearest(
    admin: AdminClient, catalogue_gateway: GatewayProcess
) -> None:
    org = await admin.create_org("cat")
    reply = await admin.call(
        "POST", f"/orgs/{org}/keys", {"name": "ci", "scopes": ["read", "wrte"]}
    )
    error = assert_error(reply, 400, "invalid_request", field="scopes")
    assert error["message"].startswith('scope "wrte" is not in the scopes catalogue (')
    assert error["message"].endswith('); did you mean "write"?')
    assert str(catalogue_gateway.config_path) in error["message"]
    listed = (await admin.call("GET", f"/orgs/{org}/keys")).ok()
    assert listed["items"] == []
    assert [e["action"] for e in await admin.audit(org)] == ["org.create"]


@pytest.mark.parametrize("scopes", [["read", "write"], ["workflows:*"], ["*"], ["keys:*"]])
async def test_create_accepts_catalogued_scopes_and_covering_wildcards(
    admin: AdminClient, scopes: list[str]
) -> None:
    org = await admin.create_org("cat")
    created = await admin.create_key(org, scopes)
    assert created["key"]["scopes"] == sorted(scopes)


@pytest.mark.parametrize(("scope", "nearest"), [("billing:*", None), ("workflow:*", "workflows:*")])
async def test_a_wildcard_must_cover_a_catalogued_scope(
    admin: AdminClient, scope: str, nearest: str | None
) -> None:
    org = await admin.create_org("cat")
    reply = await admin.call("POST", f"/orgs/{org}/keys", {"name": "ci", "scopes": [scope]})
    error = assert_error(reply, 400, "invalid_request", field="scopes")
    assert f'scope "{scope}" is not in the scopes catalogue' in error["message"]
    assert ("did you mean" in error["message"]) is (nearest is not None)
    if nearest:
        assert error["message"].endswith(f'did you mean "{nearest}"?')


async def test_update_refuses_an_uncatalogued_scope_and_keeps_the_key(
    admin: AdminClient,
) -> None:
    org = await admin.create_org("cat")
    key = (await admin.create_key(org, ["read"]))["key"]
    path = f"/orgs/{org}/keys/{key['id']}"
    reply = await admin.call("PATCH", path, {"scopes": ["read", "workflows:rn"]})
    error = assert_error(reply, 400, "invalid_request", field="scopes")
    assert error["message"].endswith('did you mean "workflows:run"?')
    assert (await admin.call("GET", path)).ok()["scopes"] == ["read"]
    assert (await admin.call("PATCH", path, {"scopes": ["workflows:run"]})).ok()["scopes"] == [
        "workflows:run"
    ]
