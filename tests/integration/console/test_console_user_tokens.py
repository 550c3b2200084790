"""Revoking a person's user tokens from the console's members page (SPEC §11: "a signed-in
console owner can do it for members of their org"): owners and admins get the form when
issuers are trusted; it calls the admin API with the session's CSRF token, says what was
done (or the API's refusal) in words, and the proxy then refuses the tokens.

A gateway of its own (this module's `gateway` replaces the package's): the console's
with `user_tokens:` trusting the real OpenID provider of tests/oidc/."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.console.conftest import SCOPES, join, unique
from tests.integration.user_tokens.conftest import ALICE, AUDIENCE, BOB, ORG, Idp, running_idp
from tests.support.browser import DESKTOP, RootApi, check_page, require_chromium
from tests.support.configs import gateway_env, operator_config
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.oidc_provider import access_token
from tests.support.stores import Stores


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Idp]:
    require_chromium()
    with running_idp(tmp_path_factory.mktemp("console-idp")) as provider:
        yield provider


@pytest.fixture(scope="module")
def token_gateway(
    idp: Idp,
    stores: Stores,
    echo_upstream: UpstreamProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    issuer = {"issuer": idp.issuer, "audience": AUDIENCE, "algorithms": ["RS256", "ES256"]}
    config = operator_config(echo_upstream.url, closed_port(), scopes=SCOPES, user_tokens=[issuer])
    log_dir = tmp_path_factory.mktemp("console-user-tokens")
    gw = start_gateway(config, log_dir, gateway_env(stores), name="console-tokens-gateway")
    with stopped_cleanly(gw):
        yield gw


@pytest.fixture
def gateway(token_gateway: GatewayProcess) -> GatewayProcess:
    assert token_gateway.process.alive(), token_gateway.process.tail()
    return token_gateway


def proxy_status(gw: GatewayProcess, token: str) -> tuple[int, str | None]:
    request = urllib.request.Request(
        gw.url + "/api/read/x", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())["error"]["code"]


def refused_within(gw: GatewayProcess, token: str, bound: float = 1.0) -> None:
    started = time.monotonic()
    while proxy_status(gw, token) != (401, "revoked_token"):
        assert time.monotonic() - started < bound, proxy_status(gw, token)
        time.sleep(0.02)


def test_owner_revokes_a_persons_tokens_from_the_members_page(
    page: Any, browser: Any, root: RootApi, idp: Idp, gateway: GatewayProcess
) -> None:
    # The org the provider's tokens name (the stores are shared: it may exist already).
    code, _ = root.call("POST", "/orgs", {"slug": ORG})
    assert code in (201, 409), code
    join(page, root, ORG, "owner")
    alice, bob = access_token(idp.running, ALICE), access_token(idp.running, BOB)
    assert proxy_status(gateway, alice) == (200, None)

    page.goto(f"/console/orgs/{ORG}/members")
    form = page.locator("#revoke-tokens-form")
    page.get_by_role("heading", name="Revoke user tokens").wait_for()
    issuer = page.get_by_label("Issuer")
    assert issuer.locator("option").all_inner_texts() == ["Every trusted issuer", idp.issuer]
    check_page(page, "members-revoke-tokens")

    # Nothing entered: said in words, the field marked, nothing sent.
    page.get_by_role("button", name="Revoke tokens").click()
    error = form.locator("[data-form-error]")
    error.wait_for()
    assert "subject" in error.inner_text()
    assert page.get_by_label("Subject").get_attribute("aria-invalid") == "true"

    # A subject no gateway would accept: the API's own message, not JSON.
    page.get_by_label("Subject").fill("josé")
    page.get_by_role("button", name="Revoke tokens").click()
    form.locator("[data-form-error]", has_text="printable ASCII").wait_for()
    assert not error.inner_text().startswith("{")

    page.get_by_label("Subject").fill(ALICE.client_id)
    issuer.select_option(idp.issuer)
    page.get_by_role("button", name="Revoke tokens").click()
    done = form.locator("[data-form-done]")
    done.wait_for()
    said = done.inner_text()
    assert f"The user tokens of {ALICE.client_id} from {idp.issuer} for {ORG}" in said, said
    assert "are now refused" in said and error.is_hidden()
    refused_within(gateway, alice)
    assert proxy_status(gateway, bob) == (200, None)
    check_page(page, "members-tokens-revoked")

    entries = root.ok("GET", f"/orgs/{ORG}/audit?action=user_token.revoke")["items"]
    assert entries[0]["details"] == {"subject": ALICE.client_id, "issuer": idp.issuer}
    assert entries[0]["principal"].startswith("user:")
    # The console's audit page says it in words, with whose tokens.
    page.goto(f"/console/orgs/{ORG}/audit?action=user_token.revoke")
    row = page.locator("tbody tr").first
    assert "User tokens revoked" in row.inner_text()
    assert ALICE.client_id in row.inner_text()

    # An admin has the form too; they revoke every issuer's tokens of Bob.
    other = browser.new_context(base_url=gateway.admin_url, viewport=DESKTOP)
    try:
        admin_page = other.new_page()
        join(admin_page, root, ORG, "admin")
        admin_page.goto(f"/console/orgs/{ORG}/members")
        admin_page.get_by_label("Subject").fill(BOB.client_id)
        admin_page.get_by_role("button", name="Revoke tokens").click()
        admin_done = admin_page.locator("#revoke-tokens-form [data-form-done]")
        admin_done.wait_for()
        assert f"The user tokens of {BOB.client_id} for {ORG}" in admin_done.inner_text()
        refused_within(gateway, bob)
    finally:
        other.close()


def test_no_form_without_trusted_issuers(browser: Any, console_gateway: GatewayProcess) -> None:
    """The package's console gateway trusts no issuer: its members page has no such form."""
    root = RootApi(console_gateway.admin_url)
    org = root.create_org(unique("plain"))
    ctx = browser.new_context(base_url=console_gateway.admin_url, viewport=DESKTOP)
    try:
        page = ctx.new_page()
        join(page, root, org, "owner")
        page.goto(f"/console/orgs/{org}/members")
        page.get_by_role("heading", name="Members", exact=True).wait_for()
        assert page.locator("#revoke-tokens-form").count() == 0
    finally:
        ctx.close()
