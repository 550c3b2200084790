"""The whole journey as a person does it, in Chromium: invited by the operator's CLI, sets
a password, creates a key with two scopes, copies it, uses it through the proxy, revokes
it behind the confirmation dialog, and finds themselves in the audit log."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from tests.integration.console.conftest import accept_invite, unique, unique_email
from tests.support.browser import RootApi, check_page, invite_link, keygate
from tests.support.gateway_process import GatewayProcess


def proxy_status(gw: GatewayProcess, key: str) -> int:
    request = urllib.request.Request(
        gw.url + "/api/read/journey", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_invite_create_copy_use_revoke_audit(
    page: Any, root: RootApi, gateway: GatewayProcess
) -> None:
    org = root.create_org(unique("journey"))
    email = unique_email("owner")

    # The operator invites the first owner with the CLI; the link is printed once.
    invited = keygate(gateway, "users", "invite", email, "--org", org, "--role", "owner")
    assert invited.returncode == 0, invited.stderr
    link = invite_link(invited.stdout)

    page.goto(link)
    assert page.get_by_text(email).count() or page.get_by_label("Email").input_value() == email
    check_page(page, "invite")
    accept_invite(page, link)
    assert page.url.endswith(f"/console/orgs/{org}/keys")

    # An empty org says what to do next.
    page.get_by_role("heading", name="No API keys yet").wait_for()
    check_page(page, "keys-empty")
    page.get_by_role("link", name="Create your first key").click()
    page.wait_for_url(f"**/console/orgs/{org}/keys/new")
    check_page(page, "key-new")

    page.get_by_label("Name").fill("Billing service")
    page.get_by_role("checkbox", name="read Read the org's resources").check()
    page.get_by_role("checkbox", name="write Change the org's resources").check()
    page.get_by_role("button", name="Create key").click()

    # The show-once panel: the key, a warning, a copy button.
    panel = page.locator("#created-section")
    panel.wait_for(state="visible")
    assert "will not be shown again" in panel.inner_text()
    secret = page.locator("#created-secret").input_value()
    assert secret.startswith("kg_live_") or "_live_" in secret, secret
    page.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    check_page(page, "key-created")

    # The key works through the proxy.
    assert proxy_status(gateway, secret) == 200

    page.get_by_role("link", name="view the key").click()
    page.get_by_role("heading", name="Billing service").wait_for()
    key_url = page.url
    assert "user:" + email in page.inner_text("main") or email in page.inner_text("main")
    check_page(page, "key-detail")

    # Revoke it behind the confirmation dialog; Escape first closes it without revoking.
    page.get_by_role("button", name="Revoke key").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    check_page(page, "key-revoke-dialog", full_page=False)
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert proxy_status(gateway, secret) == 200

    page.get_by_role("button", name="Revoke key").click()
    page.get_by_label("Reason").fill("Leaked in a log file")
    revoked_at = time.monotonic()
    dialog.get_by_role("button", name="Revoke key").click()
    page.locator(".alert-neutral").wait_for()
    assert page.url == key_url

    # The proxy refuses it within 1 s.
    while proxy_status(gateway, secret) != 401:
        assert time.monotonic() - revoked_at < 1.0, "the revoked key still works after 1 s"
        time.sleep(0.05)

    # The list greys the row and says when.
    page.get_by_role("link", name="API keys").first.click()
    row = page.locator("tr.is-revoked", has_text="Billing service")
    row.wait_for()
    assert "Revoked" in row.inner_text()
    assert row.locator("time").count() >= 1
    check_page(page, "keys-list")

    # The audit log names the person and the IP.
    page.get_by_role("link", name="Audit log").click()
    page.wait_for_url(f"**/console/orgs/{org}/audit")
    table = page.locator("table.audit-table").inner_text()
    assert f"user:{email}" in table
    assert "127.0.0.1" in table
    assert "Key revoked" in table and "Key created" in table
    check_page(page, "audit")
