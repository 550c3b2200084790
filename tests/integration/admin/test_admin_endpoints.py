"""Every endpoint of SPEC §6 with the root token, over real HTTP to `keygate serve`.

Keys made here are used through the same gateway's proxy listener, so what the admin API
says (created, updated, revoked, rolled) is checked against what the gateway then does.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from tests.support.admin_client import AdminClient, unique_slug
from tests.support.credentials import ISSUED, bearer
from tests.support.errors import assert_error
from tests.support.gateway_process import GatewayProcess
from tests.support.spec import KEY_FIELDS

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
TRACEPARENT = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"


def when(value: str) -> datetime:
    assert RFC3339_UTC.fullmatch(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def near(value: str | None, expected: datetime, slack: float = 30.0) -> bool:
    assert value is not None
    return abs((when(value) - expected).total_seconds()) < slack


async def proxy_status(http: aiohttp.ClientSession, gateway: GatewayProcess, key: str) -> int:
    async with http.get(gateway.url + "/api/read/x", headers=bearer(key)) as reply:
        await reply.read()
        return reply.status


async def wait_for_status(
    http: aiohttp.ClientSession, gateway: GatewayProcess, key: str, status: int
) -> None:
    """SPEC §5: changes reach every gateway within a second; allow two."""
    seen = 0
    for _ in range(40):
        seen = await proxy_status(http, gateway, key)
        if seen == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the proxy still answers {seen}, expected {status}")


async def test_orgs_create_list_and_audit(root: AdminClient) -> None:
    slug = unique_slug("orgs")
    reply = await root.call(
        "POST",
        "/orgs",
        {"slug": slug, "name": "Acme Corp"},
        headers={"X-Request-Id": "org-create-1", "traceparent": TRACEPARENT},
    )
    org = reply.ok(201)
    assert set(org) == {"slug", "name", "created_at"}
    assert org["slug"] == slug and org["name"] == "Acme Corp"
    assert near(org["created_at"], datetime.now(UTC))
    assert reply.headers["X-Request-Id"] == "org-create-1"

    default_name = unique_slug("noname")
    assert (await root.call("POST", "/orgs", {"slug": default_name})).ok(201)["name"]

    listed = (await root.call("GET", "/orgs")).ok()
    assert set(listed) == {"items"}
    by_slug = {o["slug"]: o for o in listed["items"]}
    assert by_slug[slug] == org and default_name in by_slug

    [entry] = await root.audit(slug)
    assert entry["action"] == "org.create" and entry["principal"] == "root"
    assert entry["request_id"] == "org-create-1" and entry["traceparent"] == TRACEPARENT
    assert entry["client_ip"] == "127.0.0.1"


async def test_create_key_shows_the_full_key_once(
    root: AdminClient, http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    org = await root.create_org("create")
    reply = await root.call(
        "POST",
        f"/orgs/{org}/keys",
        {"name": "billing sync", "scopes": ["read", "workflows:*"], "metadata": {"team": "b"}},
        headers={"X-Request-Id": "create-key-1", "traceparent": TRACEPARENT},
    )
    created = reply.ok(201)
    assert set(created) == {"key", "secret"}
    key, secret = created["key"], created["secret"]
    assert set(key) == KEY_FIELDS
    assert key["org"] == org and key["name"] == "billing sync"
    assert key["scopes"] == ["read", "workflows:*"] and key["metadata"] == {"team": "b"}
    assert key["env"] == "live" and key["status"] == "active"
    assert key["created_by"] == "root" and near(key["created_at"], datetime.now(UTC))
    for absent in (
        "expires_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
        "rolled_from",
        "rate_limit",
    ):
        assert key[absent] is None, absent
    assert key["display_prefix"] == "kg_live_" + key["id"] and len(key["id"]) == 8
    assert secret.startswith(key["display_prefix"])
    assert len(secret) == len(key["display_prefix"]) + 32 + 6
    secret_part = secret[len(key["display_prefix"]) : -6]

    # Never again: not in show, list or audit.
    for path in (f"/orgs/{org}/keys/{key['id']}", f"/orgs/{org}/keys", f"/orgs/{org}/audit"):
        text = (await root.call("GET", path)).text
        assert secret not in text and secret_part not in text, path

    # It works through the proxy, and last_used_at gets stamped (flush interval 1s).
    assert await proxy_status(http, gateway, secret) == 200
    for _ in range(60):
        shown = (await root.call("GET", f"/orgs/{org}/keys/{key['display_prefix']}")).ok()
        if shown["last_used_at"] is not None:
            break
        await asyncio.sleep(0.05)
    assert near(shown["last_used_at"], datetime.now(UTC))

    [entry] = await root.audit(org, action="key.create")
    assert entry["key_id"] == key["id"] and entry["principal"] == "root"
    assert entry["new_scopes"] == ["read", "workflows:*"]
    assert entry["request_id"] == "create-key-1" and entry["traceparent"] == TRACEPARENT
    assert entry["client_ip"] == "127.0.0.1"


async def test_create_key_env_and_expiry(root: AdminClient) -> None:
    org = await root.create_org("expiry")
    test_key = (await root.create_key(org, ["read"], env="test"))["key"]
    assert test_key["env"] == "test" and test_key["display_prefix"].startswith("kg_test_")

    in_30d = (await root.create_key(org, ["read"], expires_in="30d"))["key"]
    assert near(in_30d["expires_at"], datetime.now(UTC) + timedelta(days=30))

    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    fixed = (await root.create_key(org, ["read"], expires_at=at.isoformat()))["key"]
    assert when(fixed["expires_at"]) == at
    zulu = await root.create_key(org, ["read"], expires_at=at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert when(zulu["key"]["expires_at"]) == at


async def test_list_keys_pages_with_cursor_and_filters_by_status(root: AdminClient) -> None:
    org = await root.create_org("list")
    short = (await root.create_key(org, ["read"], name="short", expires_in="1s"))["key"]
    made = [(await root.create_key(org, ["read"], name=f"k{i}"))["key"] for i in range(5)]
    for key in made[:2]:
        (await root.call("POST", f"/orgs/{org}/keys/{key['id']}/revoke", {})).ok()

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await root.call("GET", f"/orgs/{org}/keys", params=params)).ok()
        assert set(page) == {"items", "next_cursor"} and len(page["items"]) <= 2
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    ids = [k["id"] for k in seen]
    assert len(ids) == len(set(ids)) == 6
    assert ids == [k["id"] for k in reversed([short, *made])], "newest first"
    assert all(set(k) == KEY_FIELDS for k in seen)

    await asyncio.sleep(max(0.0, (when(short["expires_at"]) - datetime.now(UTC)).total_seconds()))

    async def listed(status: str) -> set[str]:
        page = (await root.call("GET", f"/orgs/{org}/keys", params={"status": status})).ok()
        assert all(k["status"] == status for k in page["items"]) or status == "all"
        return {k["id"] for k in page["items"]}

    assert await listed("revoked") == {k["id"] for k in made[:2]}
    assert await listed("active") == {k["id"] for k in made[2:]}
    assert await listed("expired") == {short["id"]}
    assert await listed("all") == set(ids)
    default = (await root.call("GET", f"/orgs/{org}/keys")).ok()
    assert {k["id"] for k in default["items"]} == set(ids)


async def test_show_key_by_id_or_display_prefix(root: AdminClient) -> None:
    org, other = await root.create_org("show"), await root.create_org("show-other")
    key = (await root.create_key(org, ["read"]))["key"]
    by_id = (await root.call("GET", f"/orgs/{org}/keys/{key['id']}")).ok()
    by_prefix = (await root.call("GET", f"/orgs/{org}/keys/{key['display_prefix']}")).ok()
    assert by_id == by_prefix == key
    # The key exists, but not under that org: the same 404 as an unknown key.
    assert_error(await root.call("GET", f"/orgs/{other}/keys/{key['id']}"), 404, "not_found")
    wrong_prefix = "kg_test_" + key["id"]
    assert_error(await root.call("GET", f"/orgs/{org}/keys/{wrong_prefix}"), 404, "not_found")


async def test_patch_name_and_scopes(
    root: AdminClient, http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    org = await root.create_org("patch")
    created = await root.create_key(org, ["read", "write"], name="before")
    key, secret = created["key"], created["secret"]
    assert await proxy_status(http, gateway, secret) == 200  # now cached

    renamed = (await root.call("PATCH", f"/orgs/{org}/keys/{key['id']}", {"name": "after"})).ok()
    assert renamed["name"] == "after" and renamed["scopes"] == ["read", "write"]

    rescoped = (
        await root.call(
            "PATCH",
            f"/orgs/{org}/keys/{key['id']}",
            {"scopes": ["write"]},
            headers={"X-Request-Id": "patch-scopes-1", "traceparent": TRACEPARENT},
        )
    ).ok()
    assert rescoped["scopes"] == ["write"] and rescoped["name"] == "after"
    assert (await root.call("GET", f"/orgs/{org}/keys/{key['id']}")).ok() == rescoped
    await wait_for_status(http, gateway, secret, 403)  # the read route now refuses it

    entries = await root.audit(org, action="key.update")
    assert len(entries) == 2
    scopes_entry, name_entry = entries  # newest first
    assert scopes_entry["old_scopes"] == ["read", "write"]
    assert scopes_entry["new_scopes"] == ["write"]
    assert scopes_entry["request_id"] == "patch-scopes-1"
    assert scopes_entry["traceparent"] == TRACEPARENT
    assert name_entry["old_scopes"] is None and name_entry["new_scopes"] is None
    assert all(e["principal"] == "root" and e["client_ip"] == "127.0.0.1" for e in entries)


async def test_revoke_with_reason_then_again_is_idempotent(
    root: AdminClient, http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    org = await root.create_org("revoke")
    created = await root.create_key(org, ["read"])
    key, secret = created["key"], created["secret"]
    assert await proxy_status(http, gateway, secret) == 200

    path = f"/orgs/{org}/keys/{key['id']}/revoke"
    revoked = (
        await root.call(
            "POST",
            path,
            {"reason": "leaked in a ticket"},
            headers={"X-Request-Id": "revoke-1", "traceparent": TRACEPARENT},
        )
    ).ok()
    assert revoked["status"] == "revoked" and revoked["revoke_reason"] == "leaked in a ticket"
    assert revoked["revoked_by"] == "root" and near(revoked["revoked_at"], datetime.now(UTC))
    await wait_for_status(http, gateway, secret, 401)

    # Again: 200 with the key as it was (first reason, time, principal), nothing written.
    # (last_used_at aside: the use before the revoke may be flushed in between.)
    def but_last_use(k: dict[str, Any]) -> dict[str, Any]:
        return {f: v for f, v in k.items() if f != "last_used_at"}

    again = (await root.call("POST", path, {"reason": "again"})).ok()
    assert but_last_use(again) == but_last_use(revoked)
    assert_error(await root.call("POST", f"/orgs/{org}/keys/{key['id']}/roll", {}), 409, "conflict")
    still = (await root.call("GET", f"/orgs/{org}/keys/{key['id']}")).ok()
    assert but_last_use(still) == but_last_use(revoked)

    [entry] = await root.audit(org, action="key.revoke")
    assert entry["key_id"] == key["id"] and entry["principal"] == "root"
    assert entry["request_id"] == "revoke-1" and entry["traceparent"] == TRACEPARENT
    assert entry["client_ip"] == "127.0.0.1"

    # A body is optional: revoke with none at all.
    other = (await root.create_key(org, ["read"]))["key"]
    bare = (await root.call("POST", f"/orgs/{org}/keys/{other['id']}/revoke")).ok()
    assert bare["status"] == "revoked" and bare["revoke_reason"] is None


async def test_roll_with_grace(
    root: AdminClient, http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    org = await root.create_org("roll")
    created = await root.create_key(
        org, ["read"], name="rolling", expires_in="30d", metadata={"owner": "ops"}, env="test"
    )
    old, old_secret = created["key"], created["secret"]
    reply = await root.call(
        "POST",
        f"/orgs/{org}/keys/{old['id']}/roll",
        {"grace": "1h"},
        headers={"X-Request-Id": "roll-1", "traceparent": TRACEPARENT},
    )
    rolled = reply.ok(201)
    assert set(rolled) == {"key", "secret", "previous"}
    new, previous = rolled["key"], rolled["previous"]
    ISSUED.append(rolled["secret"])
    assert set(new) == set(previous) == KEY_FIELDS
    assert rolled["secret"].startswith(new["display_prefix"]) and new["id"] != old["id"]
    assert new["rolled_from"] == old["id"] and previous["id"] == old["id"]
    for same in ("name", "scopes", "metadata", "env", "org"):
        assert new[same] == old[same], same
    assert near(new["expires_at"], datetime.now(UTC) + timedelta(days=30))
    assert near(previous["expires_at"], datetime.now(UTC) + timedelta(hours=1))
    assert previous["status"] == "active"
    assert await proxy_status(http, gateway, rolled["secret"]) == 200
    assert await proxy_status(http, gateway, old_secret) == 200  # within its grace

    entries = await root.audit(org, key_id=old["id"], action="key.roll")
    assert len(entries) == 1
    assert entries[0]["request_id"] == "roll-1" and entries[0]["traceparent"] == TRACEPARENT
    assert entries[0]["principal"] == "root" and entries[0]["client_ip"] == "127.0.0.1"

    # grace 0: the old key stops at once.
    again = await root.call("POST", f"/orgs/{org}/keys/{new['id']}/roll", {"grace": "0s"})
    body = again.ok(201)
    ISSUED.append(body["secret"])
    assert body["previous"]["status"] == "revoked"
    await wait_for_status(http, gateway, rolled["secret"], 401)

    # No body: the default grace of 24h.
    third = (await root.call("POST", f"/orgs/{org}/keys/{body['key']['id']}/roll")).ok(201)
    ISSUED.append(third["secret"])
    assert near(third["previous"]["expires_at"], datetime.now(UTC) + timedelta(hours=24))


async def test_audit_filters_and_pages(root: AdminClient) -> None:
    org = await root.create_org("audit")
    keys = [(await root.create_key(org, ["read"], name=f"a{i}"))["key"] for i in range(3)]
    target = keys[0]
    (await root.call("PATCH", f"/orgs/{org}/keys/{target['id']}", {"scopes": ["read", "x"]})).ok()
    (await root.call("POST", f"/orgs/{org}/keys/{target['id']}/revoke", {"reason": "done"})).ok()

    everything = await root.audit(org, limit="1000")
    assert [e["action"] for e in everything] == [
        "key.revoke",
        "key.update",
        "key.create",
        "key.create",
        "key.create",
        "org.create",
    ]
    assert all(e["org"] == org and e["principal"] == "root" for e in everything)
    for entry in everything:
        assert when(entry["at"])

    by_id = await root.audit(org, key_id=target["id"])
    by_prefix = await root.audit(org, key_id=target["display_prefix"])
    assert by_id == by_prefix
    assert [e["action"] for e in by_id] == ["key.revoke", "key.update", "key.create"]
    assert [e["action"] for e in await root.audit(org, action="key.create")] == ["key.create"] * 3
    assert await root.audit(org, key_id=keys[1]["id"], action="key.revoke") == []

    walked: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "4", **({"cursor": cursor} if cursor else {})}
        page = (await root.call("GET", f"/orgs/{org}/audit", params=params)).ok()
        assert set(page) == {"items", "next_cursor"}
        walked += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == everything


async def test_request_id_is_generated_when_absent_or_invalid(root: AdminClient) -> None:
    for sent in ({}, {"X-Request-Id": "bad id with spaces"}, {"X-Request-Id": "x" * 129}):
        reply = await root.call("GET", "/orgs", headers=sent)
        reply.ok()
        rid = reply.headers["X-Request-Id"]
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", rid) and rid != sent.get("X-Request-Id")
