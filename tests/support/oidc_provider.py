"""A real OpenID provider for the single sign-on tests: panva's `oidc-provider` (pinned in
tests/oidc/package-lock.json) run by the machine's Node.js from tests/oidc/provider.mjs.

Tests skip, with the reason, where `node` is missing; `npm ci` runs once when
tests/oidc/node_modules is absent (CI runs it in .ci/run).
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import pytest
from playwright.async_api import Page

from gateway.embedded import free_port
from tests.support.gateway_process import REPO_ROOT, ManagedProcess, spawn

OIDC_DIR = REPO_ROOT / "tests" / "oidc"
START_TIMEOUT = 20.0
NODE_MISSING = "node is not installed (Debian package nodejs); CI installs it"

# The provider's accounts (tests/oidc/provider.mjs): any password signs them in.
ADA = "ada@example.com"  # email_verified: true
EVE = "eve@example.com"  # email_verified: false
GRACE = "grace@example.com"  # email_verified: true; the tests never invite her
NO_EMAIL = "nomail"  # no email claim at all


@dataclass
class OidcProvider:
    """A running provider and the clients registered with it."""

    process: ManagedProcess
    port: int
    client_id: str
    client_secret: str
    public_client_id: str

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def oidc_config(self, *, public: bool = False) -> dict[str, object]:
        """The `console.oidc` section of a Keygate config for this provider."""
        if public:
            return {"issuer": self.issuer, "client_id": self.public_client_id, "label": "Test IdP"}
        return {
            "issuer": self.issuer,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "label": "Test IdP",
        }


@dataclass(frozen=True)
class ServiceClient:
    """A client of the provider whose access tokens name it as `sub`, for `org`."""

    client_id: str
    secret: str
    org: str


def access_token(
    provider: OidcProvider, client: ServiceClient, alg: str = "RS256", ttl: int = 600
) -> str:
    """A JWT access token for Keygate from the provider (client credentials grant with a
    resource indicator choosing the signing algorithm and lifetime)."""
    body = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "resource": f"https://api.keygate.test/{alg}/{ttl}",
            "scope": "read manage events",
        }
    ).encode()
    request = urllib.request.Request(provider.issuer + "/token", data=body, method="POST")
    basic = base64.b64encode(f"{client.client_id}:{client.secret}".encode()).decode()
    request.add_header("Authorization", f"Basic {basic}")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            token = json.load(resp)["access_token"]
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"the provider refused the token request: {exc.read()!r}") from None
    assert isinstance(token, str) and token.count(".") == 2, token
    return token


def node() -> str:
    """The `node` binary, or skip the test saying how to get it."""
    path = shutil.which("node")
    if path is None:
        pytest.skip(NODE_MISSING)
    return path


def ensure_node_modules() -> None:
    """`npm ci` from the committed lock file, once, when node_modules is missing."""
    if (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (Debian package npm); CI installs it")
    result = subprocess.run(
        [npm, "ci", "--prefix", str(OIDC_DIR), "--no-audit", "--no-fund"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm ci --prefix tests/oidc failed:\n{result.stdout}\n{result.stderr}")


@contextmanager
def running_oidc_provider(
    log_dir: Path,
    redirect_uris: Sequence[str],
    *,
    id_token_claims: bool = False,
    port: int | None = None,
    client_secret: str | None = None,
    name: str = "oidc-provider",
    audience: str | None = None,
    service_clients: Sequence[ServiceClient] = (),
    jwks_file: Path | None = None,
) -> Iterator[OidcProvider]:
    """Start the provider on a free port (or `port`) with a confidential client
    (client_secret_basic) and a public one, both allowed `redirect_uris`; ready once its
    discovery document answers. `id_token_claims`: email and name in the ID token itself
    rather than only from the userinfo endpoint. `port` and `client_secret` let a gateway be
    configured before the provider starts (it needs the gateway's redirect URI)."""
    binary = node()
    ensure_node_modules()
    port = port or free_port()
    secret = client_secret or secrets.token_urlsafe(24)
    env = {
        "OIDC_PORT": str(port),
        "OIDC_CLIENT_ID": "keygate-console",
        "OIDC_CLIENT_SECRET": secret,
        "OIDC_PUBLIC_CLIENT_ID": "keygate-public",
        "OIDC_REDIRECT_URIS": ",".join(redirect_uris),
        "OIDC_ID_TOKEN_CLAIMS": "1" if id_token_claims else "0",
    }
    if audience is not None:  # user tokens (SPEC §11): JWT access tokens for Keygate
        env["OIDC_RESOURCE_AUDIENCE"] = audience
        env["OIDC_SERVICE_CLIENTS"] = ",".join(
            f"{c.client_id}:{c.secret}:{c.org}" for c in service_clients
        )
    if jwks_file is not None:
        env["OIDC_JWKS_FILE"] = str(jwks_file)
    process = spawn(name, [binary, str(OIDC_DIR / "provider.mjs")], log_dir, env)
    provider = OidcProvider(process, port, "keygate-console", secret, "keygate-public")
    try:
        _wait_ready(provider)
        yield provider
    finally:
        provider.process.stop(expect_code=None)


def _wait_ready(provider: OidcProvider) -> None:
    url = provider.issuer + "/.well-known/openid-configuration"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not provider.process.alive():
            raise RuntimeError(f"the OpenID provider exited early\n{provider.process.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if json.load(resp).get("issuer") == provider.issuer:
                    return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.05)
    provider.process.kill()
    raise RuntimeError(f"the OpenID provider did not start\n{provider.process.tail()}")


FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')


async def sign_in_at_provider(
    http: aiohttp.ClientSession, authorize_url: str, login: str, callback: str
) -> str:
    """Play the browser at the provider: follow its redirects, fill its login page with
    `login` (any password) and return the URL it finally sends the browser to, which must
    start with `callback` (the relying party's redirect URI). `http` needs a cookie jar that
    keeps cookies of IP-address hosts (`aiohttp.CookieJar(unsafe=True)`)."""
    url, method, form = authorize_url, "GET", None
    for _ in range(12):
        async with http.request(method, url, data=form, allow_redirects=False) as resp:
            body = await resp.text()
            location = resp.headers.get("Location")
            here = str(resp.url)
        if location is not None:
            url = urljoin(here, location)
            if url.startswith(callback):
                return url
            method, form = "GET", None
            continue
        match = FORM_ACTION.search(body)
        assert resp.status == 200 and match, f"no login form at {here} ({resp.status}): {body}"
        url = urljoin(here, html.unescape(match.group(1)))
        method, form = "POST", {"prompt": "login", "login": login, "password": "any password"}
    raise AssertionError(f"the provider never redirected to {callback}")


async def browser_sign_in(page: Page, login: str) -> None:
    """On the provider's login page (the browser was just sent there): sign in as `login`."""
    await page.locator('input[name="login"]').fill(login)
    await page.locator('input[name="password"]').fill("any password")
    await page.locator('button[type="submit"]').click()
