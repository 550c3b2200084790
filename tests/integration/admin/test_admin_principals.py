"""Who may do what on the admin API: the root token, and API keys acting in their own org."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from gateway.keys.format import base62_checksum
from tests.support.admin_client import AdminClient, unique_slug
from tests.support.credentials import ISSUED, ROOT_TOKEN
from tests.support.errors import Reply, assert_error
from tests.support.gateway_process import GatewayProcess

TRACEPARENT = "00-" + "12" * 16 + "-" + "34" * 8 + "-01"


@dataclass
class Tenant:
    """An org with a managing key, a reading key, a key with neither, and one ordinary key."""

    slug: str
    manager: AdminClient
    manager_principal: str  # SPEC §1: key:<display prefix>
    reader: AdminClient
    plain: AdminClient
    target: dict[str, Any]


async def tenant(root: AdminClient, label: str) -> Tenant:
    slug = await root.create_org(label)
    manager = await root.create_key(slug, ["keys:manage", "read", "write"], name="manager")
    reader = await root.create_key(slug, ["keys:read"], name="reader")
    plain = await root.create_key(slug, ["read"], name="plain")
    target = (await root.create_key(slug, ["read"], name="target"))["key"]
    return Tenant(
        slug,
        root.as_(manager["secret"]),
        "key:" + manager["key"]["display_prefix"],
        root.as_(reader["secret"]),
        root.as_(plain["secret"]),
        target,
    )


def writes(org: str, key_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("POST", f"/orgs/{org}/keys", {"name": "n", "scopes": ["read"]}),
        ("PATCH", f"/orgs/{org}/keys/{key_id}", {"name": "renamed"}),
        ("POST", f"/orgs/{org}/keys/{key_id}/revoke", {"reason": "r"}),
        ("POST", f"/orgs/{org}/keys/{key_id}/roll", {"grace": "1h"}),
    ]


def reads(org: str, key_id: str) -> list[str]:
    return [f"/orgs/{org}/keys", f"/orgs/{org}/keys/{key_id}", f"/orgs/{org}/audit"]


async def test_manager_key_acts_in_its_own_org(root: AdminClient) -> None:
    t = await tenant(root, "mgr")
    headers = {"X-Request-Id": "by-key-1", "traceparent": TRACEPARENT}
    created = (
        await t.manager.call(
            "POST",
            f"/orgs/{t.slug}/keys",
            {"name": "made by key", "scopes": ["read"]},
            headers=headers,
        )
    ).ok(201)
    ISSUED.append(created["secret"])
    assert created["key"]["created_by"] == t.manager_principal
    key_id = created["key"]["id"]
    patched = (
        await t.manager.call(
            "PATCH",
            f"/orgs/{t.slug}/keys/{key_id}",
            {"name": "renamed", "scopes": ["read", "write"]},
        )
    ).ok()
    assert patched["scopes"] == ["read", "write"]
    rolled = (
        await t.manager.call("POST", f"/orgs/{t.slug}/keys/{key_id}/roll", {"grace": "1m"})
    ).ok(201)
    ISSUED.append(rolled["secret"])
    revoked = (
        await t.manager.call(
            "POST", f"/orgs/{t.slug}/keys/{rolled['key']['id']}/revoke", {"reason": "by key"}
        )
    ).ok()
    assert revoked["revoked_by"] == t.manager_principal

    listed = (await t.manager.call("GET", "/orgs")).ok()
    assert [o["slug"] for o in listed["items"]] == [t.slug]

    entries = await t.manager.audit(t.slug)
    by_key = [e for e in entries if e["principal"] == t.manager_principal]
    assert sorted(e["action"] for e in by_key) == sorted(
        ["key.create", "key.update", "key.roll", "key.create", "key.revoke"]
    )
    first = next(e for e in by_key if e["request_id"] == "by-key-1")
    assert first["action"] == "key.create" and first["traceparent"] == TRACEPARENT
    assert all(e["client_ip"] == "127.0.0.1" for e in by_key)
    # The full key never shows up as the principal: only its display prefix.
    assert all(len(e["principal"]) < 40 for e in entries)


async def test_other_orgs_resources_do_not_exist_for_a_key(root: AdminClient) -> None:
    mine, theirs = await tenant(root, "mine"), await tenant(root, "theirs")
    other_key = theirs.target["id"]
    for principal in (mine.manager, mine.reader):
        for path in reads(theirs.slug, other_key):
            assert_error(await principal.call("GET", path), 404, "not_found")
        # Their key under my org's path is just as unknown.
        assert_error(
            await principal.call("GET", f"/orgs/{mine.slug}/keys/{other_key}"), 404, "not_found"
        )
    for method, path, body in writes(theirs.slug, other_key):
        assert_error(await mine.manager.call(method, path, body), 404, "not_found")
    for method, path, body in writes(mine.slug, other_key)[1:]:
        assert_error(await mine.manager.call(method, path, body), 404, "not_found")
    # Nothing happened to their key.
    still = (await root.call("GET", f"/orgs/{theirs.slug}/keys/{other_key}")).ok()
    assert still == theirs.target


async def test_read_key_may_read_but_not_write(root: AdminClient) -> None:
    t = await tenant(root, "reader")
    for path in reads(t.slug, t.target["id"]):
        (await t.reader.call("GET", path)).ok()
    for method, path, body in writes(t.slug, t.target["id"]):
        assert_error(await t.reader.call(method, path, body), 403, "forbidden")
    assert (await root.call("GET", f"/orgs/{t.slug}/keys/{t.target['id']}")).ok() == t.target


async def test_key_without_admin_scopes_is_forbidden(root: AdminClient) -> None:
    t = await tenant(root, "plain")
    for path in reads(t.slug, t.target["id"]):
        assert_error(await t.plain.call("GET", path), 403, "forbidden")
    for method, path, body in writes(t.slug, t.target["id"]):
        assert_error(await t.plain.call(method, path, body), 403, "forbidden")


async def test_a_key_cannot_grant_a_scope_it_does_not_hold(root: AdminClient) -> None:
    t = await tenant(root, "grant")
    error = assert_error(
        await t.manager.call(
            "POST", f"/orgs/{t.slug}/keys", {"name": "n", "scopes": ["read", "billing"]}
        ),
        403,
        "scope_not_held",
        "scopes",
    )
    assert "billing" in error["message"]
    assert_error(
        await t.manager.call("POST", f"/orgs/{t.slug}/keys", {"name": "n", "scopes": ["*"]}),
        403,
        "scope_not_held",
        "scopes",
    )
    assert_error(
        await t.manager.call(
            "PATCH", f"/orgs/{t.slug}/keys/{t.target['id']}", {"scopes": ["read", "admin"]}
        ),
        403,
        "scope_not_held",
        "scopes",
    )
    # A key it manages that holds more than itself is out of its reach too.
    bigger = (await root.create_key(t.slug, ["read", "billing"]))["key"]
    for method, path, body in writes(t.slug, bigger["id"])[1:2] + writes(t.slug, bigger["id"])[3:]:
        assert (await t.manager.call(method, path, body)).status == 403
    # What it holds, it may grant.
    ok = (
        await t.manager.call(
            "POST", f"/orgs/{t.slug}/keys", {"name": "n", "scopes": ["read", "write"]}
        )
    ).ok(201)
    ISSUED.append(ok["secret"])


async def test_keys_cannot_create_orgs(root: AdminClient) -> None:
    t = await tenant(root, "noorg")
    for principal in (t.manager, t.reader):
        assert_error(
            await principal.call("POST", "/orgs", {"slug": unique_slug("x")}), 403, "forbidden"
        )


async def test_bad_credentials_are_401(root: AdminClient, gateway: GatewayProcess) -> None:
    t = await tenant(root, "cred")
    revoked = await root.create_key(t.slug, ["keys:manage", "read"])
    (await root.call("POST", f"/orgs/{t.slug}/keys/{revoked['key']['id']}/revoke")).ok()
    expiring = await root.create_key(t.slug, ["keys:manage", "read"], expires_in="1s")
    manager_secret = t.manager.token
    assert manager_secret is not None
    wrong_secret = (
        manager_secret[:-10] + ("A" if manager_secret[-10] != "A" else "B") + manager_secret[-9:]
    )
    await asyncio.sleep(1.05)
    candidates = {
        "revoked key": revoked["secret"],
        "expired key": expiring["secret"],
        "wrong secret / checksum": wrong_secret,
        "wrong root token": ROOT_TOKEN + "x",
        "random token": secrets.token_urlsafe(32),
    }
    ISSUED.append(wrong_secret)
    for what, token in candidates.items():
        for method, path in (
            ("GET", f"/orgs/{t.slug}/keys"),
            ("GET", "/orgs"),
            ("POST", f"/orgs/{t.slug}/keys"),
        ):
            reply = await root.as_(token).call(
                method, path, {"name": "n", "scopes": ["read"]} if method == "POST" else None
            )
            error = assert_error(reply, 401, "unauthorized")
            assert reply.headers.get("WWW-Authenticate", "").startswith("Bearer"), what
            assert token not in reply.text and token not in error["message"], what
    missing = await root.as_(None).call("GET", "/orgs")
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    # X-API-Key is accepted for keys as on the proxy; a root token in it works too.
    via_header = await root.as_(None).call(
        "GET", f"/orgs/{t.slug}/keys", headers={"X-API-Key": manager_secret}
    )
    via_header.ok()


async def test_unauthenticated_calls_change_nothing(root: AdminClient) -> None:
    org = await root.create_org("nochange")
    before = await root.audit(org)
    anonymous = root.as_(None)
    replies: list[Reply] = [
        await anonymous.call("POST", "/orgs", {"slug": unique_slug("anon")}),
        await anonymous.call("POST", f"/orgs/{org}/keys", {"name": "n", "scopes": ["read"]}),
    ]
    for reply in replies:
        assert_error(reply, 401, "unauthorized")
    assert await root.audit(org) == before
    assert (await root.call("GET", f"/orgs/{org}/keys")).ok()["items"] == []


async def test_a_throttled_key_principal_is_429_never_401(root: AdminClient) -> None:
    """SPEC §3 step 7 holds on the admin API too: once wrong secrets for a key id hit the
    limit, even its right secret (never verified yet) is 429 with Retry-After — a right
    key must not look invalid because someone guessed at its id."""
    slug = await root.create_org("throttle")
    created = await root.create_key(slug, ["keys:read"], name="guessed-at")
    display_prefix = created["key"]["display_prefix"]
    for _ in range(20):  # cache.max_failures_per_key (default) wrong secrets, same client
        body = display_prefix + secrets.token_hex(16)
        wrong = await root.as_(body + base62_checksum(body)).call("GET", "/orgs")
        assert_error(wrong, 401, "unauthorized")
    right = await root.as_(created["secret"]).call("GET", "/orgs")
    assert_error(right, 429, "too_many_attempts")
    assert int(right.headers["Retry-After"]) >= 1
