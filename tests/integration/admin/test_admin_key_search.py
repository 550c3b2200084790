"""`GET /orgs/{org}/keys?q=`: search by name or display prefix, in the database (the
console's search box uses it), with LIKE's own wildcards taken literally."""

from __future__ import annotations

from urllib.parse import quote

from tests.support.admin_client import AdminClient
from tests.support.errors import assert_error


async def names(root: AdminClient, org: str, query: str, **params: str) -> list[str]:
    extra = "".join(f"&{k}={quote(v)}" for k, v in params.items())
    page = (await root.call("GET", f"/orgs/{org}/keys?q={quote(query)}{extra}")).ok(200)
    return [k["name"] for k in page["items"]]


async def test_search_by_name_prefix_and_id_with_literal_wildcards(root: AdminClient) -> None:
    org = await root.create_org("search")
    other = await root.create_org("search-other")
    made = {
        name: await root.create_key(org, ["read"], name=name)
        for name in ("Billing service", "billing_export", "100% uptime probe", "Search indexer")
    }
    await root.create_key(other, ["read"], name="Billing elsewhere")

    assert set(await names(root, org, "BILLING")) == {"Billing service", "billing_export"}
    # `_` and `%` are characters here, not LIKE wildcards
    assert await names(root, org, "g_e") == ["billing_export"]
    assert await names(root, org, "100%") == ["100% uptime probe"]
    assert await names(root, org, "%") == ["100% uptime probe"]
    # a display prefix or an id finds its key; the middle of an id does not
    key = made["Search indexer"]["key"]
    assert await names(root, org, key["display_prefix"]) == ["Search indexer"]
    assert await names(root, org, key["id"]) == ["Search indexer"]
    assert await names(root, org, key["display_prefix"][:-3]) == ["Search indexer"]
    assert await names(root, org, key["id"][2:]) == []  # not the middle of an id
    assert await names(root, org, "nothing like it") == []

    # combined with the status filter and pagination
    revoke = made["billing_export"]["key"]["id"]
    (await root.call("POST", f"/orgs/{org}/keys/{revoke}/revoke", {})).ok(200)
    assert await names(root, org, "billing", status="active") == ["Billing service"]
    assert await names(root, org, "billing", status="revoked") == ["billing_export"]
    first = (await root.call("GET", f"/orgs/{org}/keys?q=billing&limit=1")).ok(200)
    assert len(first["items"]) == 1 and first["next_cursor"]
    rest = (
        await root.call(
            "GET", f"/orgs/{org}/keys?q=billing&limit=1&cursor={quote(first['next_cursor'])}"
        )
    ).ok(200)
    assert {first["items"][0]["name"], rest["items"][0]["name"]} == {
        "Billing service",
        "billing_export",
    }


async def test_search_text_that_cannot_be_a_name_is_refused(root: AdminClient) -> None:
    org = await root.create_org("search-bad")
    reply = await root.call("GET", f"/orgs/{org}/keys?q={'x' * 201}")
    assert_error(reply, 400, "invalid_request", field="q")
    reply = await root.call("GET", f"/orgs/{org}/keys?q=a%00b")
    assert_error(reply, 400, "invalid_request", field="q")
