"""Admin API errors: 400 naming the field, 404, 405, 409, one JSON shape, and never a 500."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.support.admin_client import AdminClient
from tests.support.credentials import ISSUED
from tests.support.errors import Reply, assert_error
from tests.support.gateway_process import GatewayProcess

PAST = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
FUTURE = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

# (body of POST /orgs/{org}/keys, field the 400 must name)
CREATE_KEY_400: list[tuple[Any, str | None]] = [
    ({"scopes": ["read"]}, "name"),
    ({"name": "n"}, "scopes"),
    ({"name": "n", "scopes": ["read"], "colour": "red"}, "colour"),
    ({"name": 5, "scopes": ["read"]}, "name"),
    ({"name": "", "scopes": ["read"]}, "name"),
    ({"name": "x" * 201, "scopes": ["read"]}, "name"),
    ({"name": "a\nb", "scopes": ["read"]}, "name"),
    ({"name": None, "scopes": ["read"]}, "name"),
    ({"name": True, "scopes": ["read"]}, "name"),
    ({"name": "n", "scopes": "read"}, "scopes"),
    ({"name": "n", "scopes": [1]}, "scopes"),
    ({"name": "n", "scopes": ["has space"]}, "scopes"),
    ({"name": "n", "scopes": {"read": True}}, "scopes"),
    ({"name": "n", "scopes": ["read"], "env": "prod"}, "env"),
    ({"name": "n", "scopes": ["read"], "env": 1}, "env"),
    ({"name": "n", "scopes": ["read"], "expires_in": "soon"}, "expires_in"),
    ({"name": "n", "scopes": ["read"], "expires_in": "0s"}, "expires_in"),
    ({"name": "n", "scopes": ["read"], "expires_in": "-5m"}, "expires_in"),
    ({"name": "n", "scopes": ["read"], "expires_in": 3600}, "expires_in"),
    ({"name": "n", "scopes": ["read"], "expires_in": "99999999999h"}, "expires_in"),
    ({"name": "n", "scopes": ["read"], "expires_at": "tomorrow"}, "expires_at"),
    ({"name": "n", "scopes": ["read"], "expires_at": PAST}, "expires_at"),
    ({"name": "n", "scopes": ["read"], "expires_at": "2031-01-01T00:00:00"}, "expires_at"),
    ({"name": "n", "scopes": ["read"], "expires_at": 1900000000}, "expires_at"),
    ({"name": "n", "scopes": ["read"], "expires_at": FUTURE, "expires_in": "1h"}, "expires_at"),
    ({"name": "n", "scopes": ["read"], "metadata": [1, 2]}, "metadata"),
    ({"name": "n", "scopes": ["read"], "metadata": {"big": "x" * 9000}}, "metadata"),
    ({"name": "n", "scopes": ["read"], "metadata": {"nul": "a\u0000b"}}, "metadata"),
    ([{"name": "n", "scopes": ["read"]}], None),
    ("just a string", None),
]


async def test_malformed_json_is_400(root: AdminClient) -> None:
    org = await root.create_org("json")
    key = (await root.create_key(org, ["read"]))["key"]
    targets = [
        ("POST", "/orgs"),
        ("POST", f"/orgs/{org}/keys"),
        ("PATCH", f"/orgs/{org}/keys/{key['id']}"),
        ("POST", f"/orgs/{org}/keys/{key['id']}/revoke"),
        ("POST", f"/orgs/{org}/keys/{key['id']}/roll"),
    ]
    for method, path in targets:
        for raw in ('{"slug": ', "{'single': 'quotes'}", "\xff\xfe", "nul\x00", "[1, 2"):
            error = assert_error(await root.call(method, path, raw=raw), 400, "invalid_request")
            assert "JSON" in error["message"], error
    assert (await root.call("GET", f"/orgs/{org}/keys/{key['id']}")).ok()["status"] == "active"


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        ("/keys", '{"name": "a\\ud800b", "scopes": ["read"]}', "name"),
        ("/keys", '{"name": "n", "scopes": ["read\\udfff"]}', "scopes"),
        ("/keys", '{"name": "n", "scopes": ["read"], "metadata": {"k": "\\ud83d"}}', "metadata"),
        ("/keys", '{"name": "n", "scopes": ["read"], "metadata": {"\\udc00": 1}}', "metadata"),
        ("/members", '{"email": "a\\ud800@example.com", "role": "member"}', "email"),
        ("/keys", '{"\\ud800": 1}', None),
    ],
)
async def test_lone_surrogates_are_400_and_store_nothing(
    root: AdminClient, path: str, raw: str, field: str | None
) -> None:
    """JSON lets a string hold half a UTF-16 pair (`\\ud800`); no UTF-8 store or log line
    can. Refused at the parser for every body, naming the field, never a 500."""
    org = await root.create_org("surrogate")
    error = assert_error(
        await root.call("POST", f"/orgs/{org}{path}", raw=raw), 400, "invalid_request", field=field
    )
    assert "surrogate" in error["message"]
    assert (await root.call("GET", f"/orgs/{org}/keys")).ok()["items"] == []
    # A real pair (an emoji, escaped) is text like any other.
    made = await root.call(
        "POST", f"/orgs/{org}/keys", raw='{"name": "rocket \\ud83d\\ude80", "scopes": ["read"]}'
    )
    assert made.ok(201)["key"]["name"] == "rocket \U0001f680"


@pytest.mark.parametrize(("body", "field"), CREATE_KEY_400)
async def test_create_key_invalid_input_names_the_field(
    root: AdminClient, body: Any, field: str | None
) -> None:
    org = await root.create_org("bad")
    error = assert_error(
        await root.call("POST", f"/orgs/{org}/keys", body), 400, "invalid_request", field
    )
    if field is None:
        assert "field" not in error
    assert (await root.call("GET", f"/orgs/{org}/keys")).ok()["items"] == []


async def test_other_bodies_name_the_field(root: AdminClient) -> None:
    org = await root.create_org("fields")
    key = (await root.create_key(org, ["read"]))["key"]
    base = f"/orgs/{org}/keys/{key['id']}"
    cases: list[tuple[str, str, Any, str | None]] = [
        ("POST", "/orgs", {}, "slug"),
        ("POST", "/orgs", {"slug": 7}, "slug"),
        ("POST", "/orgs", {"slug": "Not A Slug"}, "slug"),
        ("POST", "/orgs", {"slug": "-leading"}, "slug"),
        ("POST", "/orgs", {"slug": "ok-slug-123", "extra": 1}, "extra"),
        ("POST", "/orgs", {"slug": "ok-slug-123", "name": ["x"]}, "name"),
        ("PATCH", base, {}, None),
        ("PATCH", base, {"name": ""}, "name"),
        ("PATCH", base, {"scopes": "read"}, "scopes"),
        ("PATCH", base, {"scopes": ["ok", "bad scope"]}, "scopes"),
        ("PATCH", base, {"status": "revoked"}, "status"),
        ("POST", base + "/revoke", {"reason": 5}, "reason"),
        ("POST", base + "/revoke", {"reason": "x" * 201}, "reason"),
        ("POST", base + "/revoke", {"why": "x"}, "why"),
        ("POST", base + "/roll", {"grace": "forever"}, "grace"),
        ("POST", base + "/roll", {"grace": 60}, "grace"),
        ("POST", base + "/roll", {"grace": "-1h"}, "grace"),
        ("POST", base + "/roll", {"grace": "99999999999d"}, "grace"),
        ("POST", base + "/roll", {"expires_in": "99999999999d"}, "expires_in"),
        ("POST", base + "/roll", {"expires_in": "never"}, "expires_in"),
        ("POST", base + "/roll", {"expires_at": "31/12/2031"}, "expires_at"),
        ("POST", base + "/roll", {"expires_at": PAST}, "expires_at"),
    ]
    for method, path, body, field in cases:
        assert_error(await root.call(method, path, body), 400, "invalid_request", field)
    after = (await root.call("GET", base)).ok()
    assert after == key, "a refused request changed the key"


async def test_query_strings_are_checked(root: AdminClient) -> None:
    org = await root.create_org("query")
    cases: list[tuple[str, dict[str, str], str]] = [
        (f"/orgs/{org}/keys", {"limit": "abc"}, "limit"),
        (f"/orgs/{org}/keys", {"limit": "0"}, "limit"),
        (f"/orgs/{org}/keys", {"limit": "1001"}, "limit"),
        (f"/orgs/{org}/keys", {"limit": "-1"}, "limit"),
        (f"/orgs/{org}/keys", {"status": "bogus"}, "status"),
        (f"/orgs/{org}/keys", {"cursor": "not-a-cursor"}, "cursor"),
        (f"/orgs/{org}/keys", {"cursor": "eyJ4IjogMX0"}, "cursor"),  # {"x": 1}
        (f"/orgs/{org}/audit", {"limit": "2.5"}, "limit"),
        (f"/orgs/{org}/audit", {"cursor": "%%%"}, "cursor"),
        (f"/orgs/{org}/audit", {"cursor": "eyJiIjogImEifQ"}, "cursor"),  # {"b": "a"}
        (f"/orgs/{org}/audit", {"key_id": "no!"}, "key_id"),
    ]
    for path, params, field in cases:
        assert_error(await root.call("GET", path, params=params), 400, "invalid_request", field)
    twice = await root.call("GET", f"/orgs/{org}/keys?status=active&status=revoked")
    assert_error(twice, 400, "invalid_request", "status")


async def test_unknown_org_and_key_are_404(root: AdminClient) -> None:
    org = await root.create_org("known")
    ghost_org = "no-such-org-0000"
    ghost_key = "Zz9Zz9Zz"
    for method, path, body in [
        ("GET", f"/orgs/{ghost_org}/keys", None),
        ("POST", f"/orgs/{ghost_org}/keys", {"name": "n", "scopes": ["read"]}),
        ("GET", f"/orgs/{ghost_org}/audit", None),
        ("GET", f"/orgs/{org}/keys/{ghost_key}", None),
        ("GET", f"/orgs/{org}/keys/kg_live_{ghost_key}", None),
        ("PATCH", f"/orgs/{org}/keys/{ghost_key}", {"name": "x"}),
        ("POST", f"/orgs/{org}/keys/{ghost_key}/revoke", {}),
        ("POST", f"/orgs/{org}/keys/{ghost_key}/roll", {}),
    ]:
        assert_error(await root.call(method, path, body), 404, "not_found")


async def test_duplicate_org_is_409(root: AdminClient) -> None:
    slug = await root.create_org("dup")
    assert_error(await root.call("POST", "/orgs", {"slug": slug}), 409, "conflict", "slug")


async def test_unknown_paths_and_methods(root: AdminClient) -> None:
    assert_error(await root.call("GET", "/nothing-here"), 404, "not_found")
    assert_error(await root.call("DELETE", "/orgs"), 405, "method_not_allowed")
    assert_error(await root.call("PUT", "/orgs/abc/keys"), 405, "method_not_allowed")


async def test_error_shape_is_the_proxys(
    root: AdminClient, http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    async with http.get(
        gateway.url + "/no/route/here", headers={"X-Request-Id": "shape-1"}
    ) as response:
        proxy = Reply(response.status, response.headers, await response.text())
    proxy_error = assert_error(proxy, 404, "no_route")
    admin = await root.call(
        "GET", "/orgs/no-such-org-0000/keys", headers={"X-Request-Id": "shape-2"}
    )
    admin_error = assert_error(admin, 404, "not_found")
    assert set(proxy_error) == {"code", "message", "request_id"}
    assert set(admin_error) - {"field"} == set(proxy_error)
    assert (proxy_error["request_id"], admin_error["request_id"]) == ("shape-1", "shape-2")
    for reply in (proxy, admin):
        assert reply.headers["Content-Type"].split(";")[0] == "application/json"
        assert reply.headers["Cache-Control"] == "no-store"


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**70, 3.5, 1e308])
    if kind == 3:
        return "".join(
            rng.choice('ab:*-_ \u0000\u00e9\U0001f600{}"\\') for _ in range(rng.randrange(12))
        )
    if kind == 4:
        return rng.choice(["read", "24h", "0s", "2031-01-01T00:00:00Z", "live", "", "x" * 300])
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    fields = [
        "slug",
        "name",
        "scopes",
        "env",
        "expires_at",
        "expires_in",
        "metadata",
        "reason",
        "grace",
        "zzz",
    ]
    return {rng.choice(fields): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


async def test_random_bodies_never_cause_a_500(root: AdminClient) -> None:
    rng = random.Random(20240605)
    org = await root.create_org("fuzz")
    key = (await root.create_key(org, ["read", "write"]))["key"]
    targets = [
        ("POST", "/orgs"),
        ("POST", f"/orgs/{org}/keys"),
        ("PATCH", f"/orgs/{org}/keys/{key['id']}"),
        ("POST", f"/orgs/{org}/keys/{key['id']}/revoke"),
        ("POST", f"/orgs/{org}/keys/{key['id']}/roll"),
    ]
    for method, path in targets:
        for _ in range(12):
            if rng.random() < 0.2:
                raw: str | bytes = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
            else:
                raw = json.dumps(random_json(rng))
            reply = await root.call(method, path, raw=raw)
            assert reply.status < 500, (method, path, raw, reply.text)
            if reply.status >= 400:
                assert_error(reply, reply.status, reply.body["error"]["code"])
            elif reply.status in (200, 201):
                body = reply.body
                if "secret" in body:
                    ISSUED.append(body["secret"])


async def test_admin_responses_name_no_versions(root: AdminClient) -> None:
    for method, path in (
        ("GET", "/orgs"),
        ("GET", "/openapi.json"),
        ("GET", "/nope"),
        ("DELETE", "/orgs"),
        ("POST", "/orgs"),
    ):
        reply = await root.call(method, path)
        assert reply.headers.get("Server", "keygate") == "keygate", (path, reply.headers)
    unauthenticated = await root.as_(None).call("GET", "/orgs")
    assert unauthenticated.headers.get("Server", "keygate") == "keygate"
