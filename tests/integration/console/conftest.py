"""The console in a real browser: one `keygate serve` with the console on, real stores,
the echo upstream behind it, and Debian's Chromium driven by Playwright.

Nothing is truncated between tests: each makes its own orgs and people (unique names).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import DESKTOP, RootApi, chromium, require_chromium
from tests.support.configs import gateway_env, operator_config
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.stores import Stores

PASSWORD = "correct horse battery staple"
# The catalogue the create form shows as checkboxes (the routes' scopes must be in it).
SCOPES = {
    "read": "Read the org's resources",
    "write": "Change the org's resources",
    "keys:read": "List and show the org's API keys (admin API)",
    "keys:manage": "Create, roll and revoke the org's API keys (admin API)",
}


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def unique_email(label: str) -> str:
    return f"{unique(label)}@example.com"


@pytest.fixture(scope="package")
def console_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    require_chromium()  # no gateway to start when no browser can look at it
    config = operator_config(echo_upstream.url, closed_port(), scopes=SCOPES)
    log_dir = tmp_path_factory.mktemp("console")
    gw = start_gateway(config, log_dir, gateway_env(stores), name="console-gateway")
    with stopped_cleanly(gw):
        yield gw


@pytest.fixture
def gateway(console_gateway: GatewayProcess) -> GatewayProcess:
    assert console_gateway.process.alive(), console_gateway.process.tail()
    return console_gateway


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not package: tests/ has no __init__.py files, so a "package" fixture
    # lives until the session ends, and Playwright's sync API keeps its event loop marked
    # running on this thread while it is open, which breaks every async test after it.
    with chromium() as b:
        yield b


@pytest.fixture
def context(browser: Any, gateway: GatewayProcess) -> Iterator[Any]:
    """A fresh browser profile (no cookies) on the admin listener's origin, allowed to
    use the clipboard."""
    ctx = browser.new_context(base_url=gateway.admin_url, viewport=DESKTOP)
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway.admin_url)
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


@pytest.fixture
def root(gateway: GatewayProcess) -> RootApi:
    return RootApi(gateway.admin_url)


def accept_invite(page: Any, link: str, name: str = "Ada Lovelace") -> None:
    """Open an invite link, choose a password: signed in on the org's first page."""
    page.goto(link)
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Confirm password").fill(PASSWORD)
    page.get_by_role("button", name="Set password and sign in").click()
    page.wait_for_url("**/console/orgs/**")


def join(page: Any, root: RootApi, org: str, role: str, *, email: str | None = None) -> str:
    """Invite a new person to `org` as `role` (root, through the API) and sign them in
    in `page`; their email."""
    email = email or unique_email(role)
    accept_invite(page, root.invite(org, email, role))
    return email
