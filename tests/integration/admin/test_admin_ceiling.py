"""A key principal can never grant, keep or lift more than it holds itself (SPEC §6).

Every attempt goes through the real admin listener with a real API key as the bearer; each
refused one is checked to have changed nothing. Root makes the acting keys, so their
scopes, env, expiry and rate limit are exactly what each case needs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.support.admin_client import AdminClient
from tests.support.credentials import ISSUED
from tests.support.errors import Reply, assert_error

LIMIT = {"requests": 100, "per": "1m"}
MANAGE = ["keys:manage", "read", "write"]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def whole_seconds(text: str) -> str:
    """An RFC 3339 time as the refusals print it: UTC, whole seconds."""
    return ts(text).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def acting_key(
    root: AdminClient, org: str, scopes: list[str] = MANAGE, **fields: Any
) -> tuple[AdminClient, dict[str, Any]]:
    created = await root.create_key(org, scopes, name="acting", **fields)
    return root.as_(created["secret"]), created["key"]


def made(reply: Reply) -> dict[str, Any]:
    body: dict[str, Any] = reply.ok(201)
    ISSUED.append(body["secret"])
    return body


async def unchanged(root: AdminClient, org: str, before: list[dict[str, Any]]) -> None:
    """No key was added or changed and no audit entry written (last use aside)."""

    def strip(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in key.items() if k != "last_used_at"} for key in keys]

    now = (await root.call("GET", f"/orgs/{org}/keys")).ok()["items"]
    assert strip(now) == strip(before)


async def keys_and_audit(root: AdminClient, org: str) -> tuple[list[dict[str, Any]], int]:
    keys = (await root.call("GET", f"/orgs/{org}/keys")).ok()["items"]
    return keys, len(await root.audit(org, limit="1000"))


# --- rate limit ------------------------------------------------------------------------


async def test_a_limited_key_cannot_remove_or_loosen_its_own_limit(root: AdminClient) -> None:
    org = await root.create_org("ownlimit")
    me, key = await acting_key(root, org, rate_limit=LIMIT)
    path = f"/orgs/{org}/keys/{key['id']}"
    before, audited = await keys_and_audit(root, org)
    for limit in (
        None,
        {"requests": 101, "per": "1m"},
        {"requests": 10, "per": "1s"},
        {"requests": 1000, "per": "1h"},
        {"requests": 200, "per": "2m"},
    ):
        error = assert_error(
            await me.call("PATCH", path, {"rate_limit": limit}), 403, "forbidden", "rate_limit"
        )
        assert error["message"].startswith("rate_limit: ") and "100/1m" in error["message"]
    await unchanged(root, org, before)
    assert len(await root.audit(org, limit="1000")) == audited
    # Tightening itself is fine, and then the tighter limit is its ceiling.
    tighter = (await me.call("PATCH", path, {"rate_limit": {"requests": 50, "per": "1m"}})).ok()
    assert tighter["rate_limit"] == {"requests": 50, "per": "1m"}
    # (A stale cached state would still allow 100/1m for up to the cache TTL.)


async def test_a_limited_key_cannot_mint_looser_children(root: AdminClient) -> None:
    org = await root.create_org("childlimit")
    me, _ = await acting_key(root, org, rate_limit=LIMIT)
    before, _ = await keys_and_audit(root, org)
    for extra in (
        {},
        {"rate_limit": None},
        {"rate_limit": {"requests": 200, "per": "1m"}},
        {"rate_limit": {"requests": 1000, "per": "1h"}},
        {"rate_limit": {"requests": 2, "per": "1s"}},
    ):
        body = {"name": "child", "scopes": ["read"], **extra}
        assert_error(
            await me.call("POST", f"/orgs/{org}/keys", body), 403, "forbidden", "rate_limit"
        )
    await unchanged(root, org, before)
    for limit in (LIMIT, {"requests": 100, "per": "1h"}, {"requests": 1, "per": "1s"}):
        child = made(
            await me.call(
                "POST",
                f"/orgs/{org}/keys",
                {"name": "child", "scopes": ["read"], "rate_limit": limit},
            )
        )
        assert child["key"]["rate_limit"] == limit
        # It may tighten, not loosen or remove, a child's limit.
        path = f"/orgs/{org}/keys/{child['key']['id']}"
        assert_error(
            await me.call("PATCH", path, {"rate_limit": None}), 403, "forbidden", "rate_limit"
        )
        (await me.call("PATCH", path, {"rate_limit": {"requests": 1, "per": "1h"}})).ok()


# --- expiry ----------------------------------------------------------------------------


async def test_an_expiring_key_cannot_mint_longer_lived_children(root: AdminClient) -> None:
    org = await root.create_org("childexp")
    me, key = await acting_key(root, org, expires_in="30d")
    own = whole_seconds(key["expires_at"])
    before, _ = await keys_and_audit(root, org)
    attempts = [
        ({}, "expires_at"),
        ({"expires_in": "31d"}, "expires_in"),
        ({"expires_in": "876000h"}, "expires_in"),
        ({"expires_at": "2999-01-01T00:00:00Z"}, "expires_at"),
    ]
    for extra, field in attempts:
        error = assert_error(
            await me.call("POST", f"/orgs/{org}/keys", {"name": "c", "scopes": ["read"], **extra}),
            403,
            "forbidden",
            field,
        )
        assert error["message"].startswith(f"{field}: the acting key expires at {own}")
    await unchanged(root, org, before)
    for extra in ({"expires_in": "1d"}, {"expires_at": own}):
        child = made(
            await me.call("POST", f"/orgs/{org}/keys", {"name": "c", "scopes": ["read"], **extra})
        )
        assert ts(child["key"]["expires_at"]) <= ts(key["expires_at"])


async def test_an_expiring_key_cannot_roll_itself_longer(root: AdminClient) -> None:
    org = await root.create_org("selfroll")
    me, key = await acting_key(root, org, expires_in="30d")
    path = f"/orgs/{org}/keys/{key['id']}/roll"
    before, _ = await keys_and_audit(root, org)
    for extra, field in (
        ({"expires_in": "36500d"}, "expires_in"),
        ({"expires_at": "2125-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_in": "31d"}, "expires_in"),
    ):
        error = assert_error(
            await me.call("POST", path, {"grace": "1h", **extra}), 403, "forbidden", field
        )
        assert whole_seconds(key["expires_at"]) in error["message"]
    await unchanged(root, org, before)
    # Without an expiry the old lifetime is counted from now, but cut at its own expiry.
    rolled = made(await me.call("POST", path, {"grace": "1m"}))
    assert rolled["key"]["expires_at"] == key["expires_at"]
    assert ts(rolled["previous"]["expires_at"]) < ts(key["expires_at"])


async def test_an_expiring_key_cannot_touch_keys_that_outlive_it(root: AdminClient) -> None:
    org = await root.create_org("outlive")
    me, _ = await acting_key(root, org, expires_in="30d")
    forever = (await root.create_key(org, ["read"]))["key"]
    later = (await root.create_key(org, ["read"], expires_in="60d"))["key"]
    before, audited = await keys_and_audit(root, org)
    for target in (forever, later):
        base = f"/orgs/{org}/keys/{target['id']}"
        for method, path, body in (
            ("PATCH", base, {"name": "x"}),
            ("POST", base + "/roll", {"expires_in": "1d"}),
            ("POST", base + "/revoke", {}),
        ):
            error = assert_error(await me.call(method, path, body), 403, "forbidden", "expires_at")
            assert target["display_prefix"] in error["message"]
    await unchanged(root, org, before)
    assert len(await root.audit(org, limit="1000")) == audited


# --- env -------------------------------------------------------------------------------


async def test_a_test_key_cannot_mint_or_touch_live_keys(root: AdminClient) -> None:
    org = await root.create_org("testenv")
    me, key = await acting_key(root, org, env="test")
    assert key["display_prefix"].startswith("kg_test_")
    live = (await root.create_key(org, ["read"]))["key"]
    before, audited = await keys_and_audit(root, org)
    for extra in ({}, {"env": "live"}):  # the default env is live
        error = assert_error(
            await me.call("POST", f"/orgs/{org}/keys", {"name": "c", "scopes": ["read"], **extra}),
            403,
            "forbidden",
            "env",
        )
        assert "test key" in error["message"]
    base = f"/orgs/{org}/keys/{live['id']}"
    for method, path, body in (
        ("PATCH", base, {"name": "x"}),
        ("POST", base + "/roll", {}),
        ("POST", base + "/revoke", {}),
    ):
        assert_error(await me.call(method, path, body), 403, "forbidden", "env")
    await unchanged(root, org, before)
    assert len(await root.audit(org, limit="1000")) == audited
    child = made(
        await me.call("POST", f"/orgs/{org}/keys", {"name": "c", "scopes": ["read"], "env": "test"})
    )
    assert child["key"]["env"] == "test"
    (await me.call("POST", f"/orgs/{org}/keys/{child['key']['id']}/revoke", {})).ok()
    # A live manager may still make test keys.
    boss, _ = await acting_key(root, org)
    made(
        await boss.call(
            "POST", f"/orgs/{org}/keys", {"name": "t", "scopes": ["read"], "env": "test"}
        )
    )


# --- scopes on the target ----------------------------------------------------------------


async def test_revoking_needs_the_same_scope_ceiling_as_updating(root: AdminClient) -> None:
    org = await root.create_org("revokescope")
    me, _ = await acting_key(root, org)
    bigger = (await root.create_key(org, ["read", "billing"]))["key"]
    base = f"/orgs/{org}/keys/{bigger['id']}"
    for method, path, body in (
        ("PATCH", base, {"name": "x"}),
        ("POST", base + "/roll", {}),
        ("POST", base + "/revoke", {"reason": "mine now"}),
    ):
        error = assert_error(await me.call(method, path, body), 403, "scope_not_held", "scopes")
        assert "billing" in error["message"]
    after = (await root.call("GET", base)).ok()
    assert after["status"] == "active" and after == bigger


# --- permission before lookup --------------------------------------------------------------


async def test_without_keys_read_an_existing_and_a_missing_key_look_the_same(
    root: AdminClient,
) -> None:
    org = await root.create_org("probe")
    plain, _ = await acting_key(root, org, scopes=["read"])
    reader, _ = await acting_key(root, org, scopes=["keys:read"])
    real = (await root.create_key(org, ["read"]))["key"]["id"]
    missing = "zzzzZZZZ" if real != "zzzzZZZZ" else "yyyyYYYY"

    def calls(key_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
        base = f"/orgs/{org}/keys/{key_id}"
        return [
            ("GET", base, None),
            ("PATCH", base, {"name": "x"}),
            ("POST", base + "/revoke", {}),
            ("POST", base + "/roll", {}),
        ]

    async def refusals(who: AdminClient, key_id: str, skip: int = 0) -> list[tuple[Any, ...]]:
        seen = []
        for method, path, body in calls(key_id)[skip:]:
            error = assert_error(await who.call(method, path, body), 403, "forbidden")
            seen.append((method, path.replace(key_id, "ID"), error["message"], error.get("field")))
        return seen

    assert await refusals(plain, real) == await refusals(plain, missing)
    # keys:read may show, but never learns from a write whether a key exists.
    assert await refusals(reader, real, skip=1) == await refusals(reader, missing, skip=1)
    # Even an org that does not exist answers the same.
    for path in (f"/orgs/{org}-nope/keys", f"/orgs/{org}-nope/keys/{real}"):
        assert_error(await plain.call("GET", path), 403, "forbidden")


async def test_listing_orgs_needs_keys_read(root: AdminClient) -> None:
    org = await root.create_org("orglist")
    await root.create_org("orglist-other")
    plain, _ = await acting_key(root, org, scopes=["read", "write"])
    assert_error(await plain.call("GET", "/orgs"), 403, "forbidden")
    for scopes in (["keys:read"], ["keys:manage"], ["keys:*"]):
        who, _ = await acting_key(root, org, scopes=scopes)
        assert [o["slug"] for o in (await who.call("GET", "/orgs")).ok()["items"]] == [org]
    everything = [o["slug"] for o in (await root.call("GET", "/orgs")).ok()["items"]]
    assert org in everything and len(everything) > 1


# --- idempotent revoke, principals -------------------------------------------------------


async def test_a_key_revoking_twice_gets_200_and_one_audit_entry(root: AdminClient) -> None:
    org = await root.create_org("twice")
    me, key = await acting_key(root, org, expires_in="30d", rate_limit=LIMIT)
    child = made(
        await me.call(
            "POST",
            f"/orgs/{org}/keys",
            {"name": "c", "scopes": ["read"], "expires_in": "1d", "rate_limit": LIMIT},
        )
    )["key"]
    path = f"/orgs/{org}/keys/{child['id']}/revoke"
    first = (await me.call("POST", path, {"reason": "first"})).ok()
    assert first["revoked_by"] == "key:" + key["display_prefix"]
    assert first["revoke_reason"] == "first"
    again = (await root.call("POST", path, {"reason": "second"})).ok()
    assert again == first
    entries = await root.audit(org, key_id=child["id"])
    assert [(e["action"], e["principal"]) for e in entries] == [
        ("key.revoke", "key:" + key["display_prefix"]),
        ("key.create", "key:" + key["display_prefix"]),
    ]
    assert child["created_by"] == "key:" + key["display_prefix"]
