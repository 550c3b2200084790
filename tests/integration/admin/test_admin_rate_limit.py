"""A key's own rate limit through the admin API: create, show, PATCH (set, change,
remove), roll, audit, validation errors naming the field, and the proxy applying it."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.support.admin_client import AdminClient
from tests.support.credentials import ISSUED
from tests.support.errors import assert_error
from tests.support.gateway_process import GatewayProcess
from tests.support.rate_limits import Seen, get, in_one_window

LIMIT = {"requests": 2, "per": "1h"}


async def test_create_show_patch_and_audit(root: AdminClient) -> None:
    org = await root.create_org("rl")
    key = (await root.create_key(org, ["read"], rate_limit={"requests": 100, "per": "60s"}))["key"]
    assert key["rate_limit"] == {"requests": 100, "per": "1m"}  # normalised
    path = f"/orgs/{org}/keys/{key['id']}"
    assert (await root.call("GET", path)).ok()["rate_limit"] == {"requests": 100, "per": "1m"}

    changed = (await root.call("PATCH", path, {"rate_limit": {"requests": 5, "per": "1h"}})).ok()
    assert changed["rate_limit"] == {"requests": 5, "per": "1h"}
    assert changed["scopes"] == ["read"]
    renamed = (await root.call("PATCH", path, {"name": "other"})).ok()
    assert renamed["rate_limit"] == {"requests": 5, "per": "1h"}  # absent: unchanged
    removed = (await root.call("PATCH", path, {"rate_limit": None})).ok()
    assert removed["rate_limit"] is None

    updates = await root.audit(org, key_id=key["id"], action="key.update")
    assert [e["details"] for e in updates] == [
        {"old_rate_limit": {"requests": 5, "per": "1h"}, "new_rate_limit": None},
        {"old_name": "test key", "new_name": "other"},
        {
            "old_rate_limit": {"requests": 100, "per": "1m"},
            "new_rate_limit": {"requests": 5, "per": "1h"},
        },
    ]
    created = await root.audit(org, key_id=key["id"], action="key.create")
    assert created[0]["details"]["rate_limit"] == {"requests": 100, "per": "1m"}


async def test_roll_keeps_the_rate_limit(root: AdminClient) -> None:
    org = await root.create_org("rl")
    old = (await root.create_key(org, ["read"], rate_limit=LIMIT))["key"]
    rolled = (await root.call("POST", f"/orgs/{org}/keys/{old['id']}/roll")).ok(201)
    ISSUED.append(rolled["secret"])
    assert rolled["key"]["rate_limit"] == rolled["previous"]["rate_limit"] == LIMIT
    entry = (await root.audit(org, key_id=rolled["key"]["id"], action="key.create"))[0]
    assert entry["details"] == {"rolled_from": old["id"], "rate_limit": LIMIT}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"requests": 0, "per": "1m"}, "invalid rate_limit.requests: 0 is not a request count"),
        ({"requests": 5, "per": "500ms"}, "invalid rate_limit.per: '500ms' is shorter than"),
        ({"requests": 5, "per": "xyz"}, "invalid rate_limit.per: 'xyz' is not a duration"),
        ({"requests": 5, "per": 60}, "invalid rate_limit.per: 60 is not a duration"),
        ({"requests": "5", "per": "1m"}, "invalid rate_limit.requests"),
        ({"requests": 5}, "invalid rate_limit.per: is required"),
        ({"requests": 5, "per": "1m", "burst": 1}, "unknown field 'burst'"),
        ("100/1m", "rate_limit must be an object or null"),
        ([5, "1m"], "rate_limit must be an object or null"),
    ],
)
async def test_bad_rate_limits_are_400_naming_the_field(
    root: AdminClient, value: Any, says: str
) -> None:
    org = await root.create_org("rl")
    body = {"name": "k", "scopes": ["read"], "rate_limit": value}
    error = assert_error(
        await root.call("POST", f"/orgs/{org}/keys", body), 400, "invalid_request", "rate_limit"
    )
    assert says in error["message"], error
    key = (await root.create_key(org, ["read"]))["key"]
    path = f"/orgs/{org}/keys/{key['id']}"
    error = assert_error(
        await root.call("PATCH", path, {"rate_limit": value}), 400, "invalid_request", "rate_limit"
    )
    assert says in error["message"], error
    assert (await root.call("GET", path)).ok()["rate_limit"] is None  # nothing written
    assert await root.audit(org, key_id=key["id"], action="key.update") == []


async def test_limit_set_by_patch_reaches_the_proxy(
    root: AdminClient, http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    org = await root.create_org("rl")
    url = gateway.url + "/api/read/x"

    async def scenario() -> list[Seen]:
        created = await root.create_key(org, ["read"])
        secret, key_id = created["secret"], created["key"]["id"]
        before = await get(http, url, secret)  # cached, without a limit
        (await root.call("PATCH", f"/orgs/{org}/keys/{key_id}", {"rate_limit": LIMIT})).ok()
        # The admin API evicts its own worker's copy and publishes before it answers.
        return [before, *[await get(http, url, secret) for _ in range(3)]]

    seen = await in_one_window(scenario)
    assert [(s.status, s.limit, s.remaining) for s in seen] == [
        (200, None, None),
        (200, "2", "1"),
        (200, "2", "0"),
        (429, "2", "0"),
    ]
