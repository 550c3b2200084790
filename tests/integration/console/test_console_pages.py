"""The console's other pages as an owner uses them: a longer key list with search, status
filter and pages; rolling a key; members (invite, change a role, remove)."""

from __future__ import annotations

from typing import Any

from tests.integration.console.conftest import join, unique, unique_email
from tests.support.browser import RootApi, check_page, screenshot


def test_key_list_search_filter_and_pages(page: Any, root: RootApi) -> None:
    org = root.create_org(unique("list"))
    join(page, root, org, "owner")
    names = ["Billing service", "Search indexer", "Mobile app (iOS)", "Nightly export"]
    made = {}
    for i in range(27):
        name = names[i % len(names)] + ("" if i < len(names) else f" {i}")
        body = {"name": name, "scopes": ["read"] if i % 2 else ["read", "write"]}
        if i % 3 == 0:
            body["env"] = "test"
        made[name] = root.ok("POST", f"/orgs/{org}/keys", body, 201)["key"]
    root.ok("POST", f"/orgs/{org}/keys/{made['Nightly export']['id']}/revoke", {})

    page.goto(f"/console/orgs/{org}/keys")
    assert page.locator("tbody tr").count() == 25
    check_page(page, "keys-list-full")
    screenshot(page, "keys-list-view", full_page=False)  # the README's picture
    page.get_by_role("link", name="Next page").click()
    assert page.locator("tbody tr").count() == 2
    page.get_by_role("link", name="First page").click()

    page.get_by_label("Search keys by name or prefix").fill("indexer")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("tbody tr")
    assert rows.count() == 7 and all("Search indexer" in t for t in rows.all_inner_texts())
    prefix = made["Mobile app (iOS)"]["display_prefix"]
    page.get_by_label("Search keys by name or prefix").fill(prefix)
    page.get_by_role("button", name="Search").click()
    assert page.locator("tbody tr").count() == 1

    page.goto(f"/console/orgs/{org}/keys?status=revoked")
    assert page.locator("tbody tr").all_inner_texts()[0].startswith("Nightly export")
    assert page.locator("tbody tr.is-revoked").count() == 1
    page.goto(f"/console/orgs/{org}/keys?status=expired")
    page.get_by_role("heading", name="No keys match").wait_for()
    check_page(page, "keys-no-match")


def test_roll_shows_the_new_key_once(page: Any, root: RootApi) -> None:
    org = root.create_org(unique("roll"))
    join(page, root, org, "admin")
    key = root.ok("POST", f"/orgs/{org}/keys", {"name": "Worker", "scopes": ["read"]}, 201)["key"]
    page.goto(f"/console/orgs/{org}/keys/{key['id']}")
    page.get_by_role("button", name="Roll key").click()
    page.get_by_label("Keep the current key working for").select_option("1h")
    check_page(page, "key-roll-dialog", full_page=False)
    page.get_by_role("dialog").get_by_role("button", name="Roll key").click()
    secret = page.locator("#rolled-secret")
    secret.wait_for()
    new_secret = secret.input_value()
    assert "_live_" in new_secret
    page.get_by_role("link", name="view the new key").click()
    page.wait_for_url(f"**/console/orgs/{org}/keys/*")
    assert key["id"] not in page.url
    assert "replaces" in page.inner_text("main").lower()
    old = root.ok("GET", f"/orgs/{org}/keys/{key['id']}")
    assert old["expires_at"] is not None and old["status"] == "active"


def test_owner_invites_changes_a_role_and_removes(page: Any, root: RootApi) -> None:
    org = root.create_org(unique("team"))
    join(page, root, org, "owner")
    page.goto(f"/console/orgs/{org}/members")
    check_page(page, "members-owner")

    newcomer = unique_email("newcomer")
    page.get_by_label("Email").fill(newcomer)
    page.get_by_label("Role", exact=True).select_option("member")
    page.get_by_role("button", name="Send invite").click()
    link = page.locator("#invite-link")
    link.wait_for()
    assert "/console/invite/" in link.input_value()
    check_page(page, "members-invited")

    # An error from the API is shown in words: inviting them again with another role.
    page.get_by_label("Email").fill(newcomer)
    page.get_by_label("Role", exact=True).select_option("admin")
    page.get_by_role("button", name="Send invite").click()
    error = page.locator("#invite-form [data-form-error]")
    error.wait_for()
    assert "already" in error.inner_text()
    assert not error.inner_text().startswith("{") and '"error"' not in error.inner_text()

    page.reload()
    page.get_by_label(f"Role of {newcomer}").select_option("admin")
    page.get_by_text(f"{newcomer} is now admin").wait_for()
    assert root.ok("GET", f"/orgs/{org}/members")["items"]

    page.get_by_role("button", name=f"Remove {newcomer}").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove member").click()
    page.locator(f'tr[data-email="{newcomer}"]').wait_for(state="detached")
    emails = [m["email"] for m in root.ok("GET", f"/orgs/{org}/members")["items"]]
    assert newcomer not in emails
