"""A real browser for the console's tests: Debian's Chromium driven by Playwright.

Playwright's own browser download is not reachable here, so the tests launch
/usr/bin/chromium (`apt-get install -y chromium`) and skip, saying so, where it is
missing. Also: the page checks every console test makes (axe-core accessibility,
screenshots at desktop and phone width) and a blocking root-token client for setup.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import subprocess_env
from tests.support.credentials import ROOT_TOKEN
from tests.support.gateway_process import REPO_ROOT, GatewayProcess

CHROMIUM = Path(os.environ.get("KEYGATE_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO_ROOT / "tests" / "artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SERIOUS = ("serious", "critical")


def require_chromium() -> None:
    """Skip the calling test (or module) when there is no Chromium to drive."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"browser tests need Chromium at {CHROMIUM} (apt-get install -y chromium); "
            "Playwright's own browser download is not used"
        )


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium for the block (a playwright.sync_api.Browser)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


def axe_violations(page: Any) -> list[str]:
    """The serious and critical axe-core violations of the page as it is now, in words."""
    from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]

    results = Axe().run(page)
    found = []
    for violation in results.response.get("violations", []):
        if violation.get("impact") in SERIOUS:
            targets = [n.get("target") for n in violation.get("nodes", [])][:3]
            found.append(
                f"{violation['id']} ({violation['impact']}): {violation['help']} {targets}"
            )
    return found


def assert_accessible(page: Any) -> None:
    found = axe_violations(page)
    assert not found, f"axe-core on {page.url}:\n" + "\n".join(found)


def screenshot(page: Any, name: str, *, full_page: bool = True) -> None:
    """Save the page at desktop and phone width under tests/artifacts/screenshots/: full
    length, or the viewport only (a modal dialog's backdrop covers just the viewport)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    try:
        for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(viewport)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=full_page)
    finally:
        if size:
            page.set_viewport_size(size)


def check_page(page: Any, name: str, *, full_page: bool = True) -> None:
    """What every console page must pass: no serious accessibility problem; and a look."""
    assert_accessible(page)
    screenshot(page, name, full_page=full_page)


@dataclass
class RootApi:
    """The admin API with the root token, blocking (for the tests' setup steps)."""

    base_url: str
    token: str = ROOT_TOKEN

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + "/admin/v1" + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                text = reply.read().decode()
                return reply.status, json.loads(text) if text else None
        except urllib.error.HTTPError as err:
            text = err.read().decode()
            return err.code, json.loads(text) if text else None

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        code, data = self.call(method, path, body)
        assert code == status, f"{method} {path}: {code} {data}"
        return data

    def create_org(self, slug: str) -> str:
        self.ok("POST", "/orgs", {"slug": slug}, 201)
        return slug

    def invite(self, org: str, email: str, role: str) -> str:
        """An invite link for `email` as `role` of `org` (root, through the API)."""
        reply = self.ok("POST", f"/orgs/{org}/members", {"email": email, "role": role}, 201)
        return str(reply["invite_url"])


def keygate(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`keygate ARGS… --config <the gateway's>` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(gw.config_path)],
        env=subprocess_env(gw.env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def invite_link(output: str) -> str:
    """The one-time link `keygate users invite` printed."""
    found = re.search(r"https?://\S+/console/invite/\S+", output)
    assert found, f"no invite link in: {output}"
    return found.group(0)
