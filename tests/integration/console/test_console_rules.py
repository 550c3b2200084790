"""The console's rules, enforced by the server and seen in the browser: roles, other orgs,
CSRF and Origin, and sessions revoked by the operator."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.integration.console.conftest import PASSWORD, join, unique, unique_email
from tests.support.browser import RootApi, check_page, keygate
from tests.support.gateway_process import GatewayProcess

NO_ACCESS = "have access to API keys"


def test_member_sees_no_key_pages_and_the_api_refuses_them(page: Any, root: RootApi) -> None:
    org = root.create_org(unique("members"))
    key = root.ok("POST", f"/orgs/{org}/keys", {"name": "k", "scopes": ["read"]}, 201)["key"]
    join(page, root, org, "member")

    assert page.url.endswith(f"/console/orgs/{org}/keys")
    assert NO_ACCESS in page.inner_text("main")
    assert "member" in page.inner_text("main")
    assert page.locator("table").count() == 0
    check_page(page, "no-access")
    for path in ("keys/new", f"keys/{key['id']}", "audit", "members"):
        reply = page.goto(f"/console/orgs/{org}/{path}")
        assert reply.status == 403, path
        assert NO_ACCESS in page.inner_text("main")
        assert key["display_prefix"] not in page.content()

    # The same person through the API, with the same cookie: refused too.
    for path in (f"/orgs/{org}/keys", f"/orgs/{org}/keys/{key['id']}", f"/orgs/{org}/audit"):
        reply = page.request.get("/admin/v1" + path)
        assert reply.status == 403, path
        assert reply.json()["error"]["code"] == "forbidden"


def test_an_admin_of_one_org_finds_nothing_in_another(page: Any, root: RootApi) -> None:
    org_a = root.create_org(unique("own"))
    org_b = root.create_org(unique("other"))
    other = root.ok("POST", f"/orgs/{org_b}/keys", {"name": "b", "scopes": ["read"]}, 201)["key"]
    join(page, root, org_a, "admin")

    for path in (
        f"/console/orgs/{org_b}/keys",
        f"/console/orgs/{org_b}/keys/{other['id']}",
        f"/console/orgs/{org_b}/audit",
        f"/console/orgs/{org_b}/members",
        f"/console/orgs/{org_a}/keys/{other['id']}",  # B's key under A's URL
        "/console/orgs/no-such-org/keys",
    ):
        reply = page.goto(path)
        assert reply.status == 404, path
        page.get_by_role("heading", name="Page not found").wait_for()
        assert other["display_prefix"] not in page.content()
    check_page(page, "not-found")
    assert page.request.get(f"/admin/v1/orgs/{org_b}/keys").status == 404

    # Their own org's members, read-only.
    page.goto(f"/console/orgs/{org_a}/members")
    assert page.locator("#invite-form").count() == 0
    assert page.locator("[data-role-select]").count() == 0
    assert "only owners can invite" in page.inner_text("main")
    check_page(page, "members-admin")


def test_csrf_token_and_origin_are_required(
    page: Any, root: RootApi, gateway: GatewayProcess
) -> None:
    org = root.create_org(unique("csrf"))
    email = join(page, root, org, "owner")
    create = {"name": "forged", "scopes": ["read"]}

    # A fetch from the console's own page without the token: refused.
    status, code = page.evaluate(
        """async ([org, body]) => {
            const r = await fetch(`/admin/v1/orgs/${org}/keys`, {
                method: "POST", credentials: "same-origin",
                headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
            return [r.status, (await r.json()).error.code];
        }""",
        [org, create],
    )
    assert (status, code) == (403, "csrf_failed")
    # With it, the same call works (so the refusal was the token's).
    status = page.evaluate(
        """async ([org, body]) => (await fetch(`/admin/v1/orgs/${org}/keys`, {
            method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json",
                      "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content},
            body: JSON.stringify(body)})).status""",
        [org, {"name": "allowed", "scopes": ["read"]}],
    )
    assert status == 201

    # Form posts from another origin (same site: the session cookie is sent along).
    evil = f"http://127.0.0.1:{gateway.proxy_port}/evil"
    admin = gateway.admin_url
    forms = {
        "sign-out": f'<form method="post" action="{admin}/console/sign-out">'
        '<input name="csrf_token" value="guess"><button>go</button></form>',
        # text/plain smuggles a JSON body: {"name":"x","scopes":["read"],"pad":"="}
        "api": f'<form method="post" enctype="text/plain" '
        f'action="{admin}/admin/v1/orgs/{org}/keys">'
        '<input name=\'{"name":"x","scopes":["read"],"pad":"\' value=\'"}\'>'
        "<button>go</button></form>",
        "sign-in": f'<form method="post" action="{admin}/console/sign-in">'
        f'<input name="email" value="{email}"><input name="password" value="{PASSWORD}">'
        "<button>go</button></form>",
    }
    for name, form in forms.items():
        page.route(evil, serve(form))
        page.goto(evil)
        with page.expect_navigation() as navigation:
            page.get_by_role("button", name="go").click()
        assert navigation.value.status == 403, name
        page.unroute(evil)

    # Nothing was created, and the session is still there.
    keys = root.ok("GET", f"/orgs/{org}/keys")["items"]
    assert sorted(k["name"] for k in keys) == ["allowed"]
    assert page.goto(f"/console/orgs/{org}/keys").status == 200
    assert page.url.endswith(f"/console/orgs/{org}/keys")


def serve(html: str) -> Any:
    """A route handler answering with `html` (a page of another origin)."""
    return lambda route: route.fulfill(content_type="text/html", body=html)


def test_a_session_revoked_by_the_cli_ends_within_a_second(
    page: Any, root: RootApi, gateway: GatewayProcess
) -> None:
    org = root.create_org(unique("revoke"))
    email = join(page, root, org, "owner")
    assert page.goto(f"/console/orgs/{org}/keys").status == 200

    result = keygate(gateway, "sessions", "revoke", "--user", email)
    assert result.returncode == 0, result.stderr
    revoked = time.monotonic()
    while True:
        page.goto(f"/console/orgs/{org}/keys")
        if "/console/sign-in" in page.url:
            break
        assert time.monotonic() - revoked < 1.0, "the session still works 1 s after revoking"
        time.sleep(0.05)
    assert parse_qs(urlsplit(page.url).query)["next"] == [f"/console/orgs/{org}/keys"]
    assert page.request.get(f"/admin/v1/orgs/{org}/keys").status == 401


def test_sign_in_errors_never_say_whether_the_account_exists(page: Any, root: RootApi) -> None:
    org = root.create_org(unique("signin"))
    email = join(page, root, org, "admin")
    page.locator(".account-menu summary").click()
    assert email in page.locator(".account-menu").inner_text()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/sign-in?signed_out=1")
    check_page(page, "sign-in")

    messages = []
    for who in (email, unique_email("nobody")):
        page.get_by_label("Email").fill(who)
        page.get_by_label("Password").fill("not the password at all")
        page.get_by_role("button", name="Sign in", exact=True).click()
        messages.append(page.get_by_role("alert").inner_text())
    assert messages[0] == messages[1]
    check_page(page, "sign-in-error")

    # A page behind sign-in comes back after signing in.
    page.goto(f"/console/orgs/{org}/audit")
    assert "/console/sign-in?next=" in page.url
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"**/console/orgs/{org}/audit")
