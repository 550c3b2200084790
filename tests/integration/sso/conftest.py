"""Fixtures for the single sign-on tests: a real OpenID provider (tests/oidc/) and a
relying party — the console's SSO routes mounted at /console on a small aiohttp app, on a
port chosen before the provider starts so the provider knows its redirect URI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import Config, ConsoleConfig, ListenConfig, OidcConfig
from gateway.console.oidc import DEFAULT_TIMEOUT
from gateway.console.sso import install_sso
from gateway.embedded import free_port
from gateway.people.errors import SSO_NO_ACCOUNT, SignInFailed
from tests.support.oidc_provider import ADA, OidcProvider, running_oidc_provider

if TYPE_CHECKING:
    from gateway.people.service import PeopleService


@dataclass
class SignedInStub:
    session_id: str
    max_age: int


@dataclass
class Directory:
    """The people service as far as SSO sees it: who may sign in, and who did. (The real
    PeopleService, on PostgreSQL, is exercised through the gateway in test_console_sso.)"""

    allowed: set[str] = field(default_factory=lambda: {ADA})
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def sign_in_sso(
        self, email: str, name: str | None, *, client_ip: str | None, user_agent: str | None
    ) -> SignedInStub:
        self.calls.append(
            {"email": email, "name": name, "client_ip": client_ip, "user_agent": user_agent}
        )
        if email not in self.allowed:
            raise SignInFailed(SSO_NO_ACCOUNT)
        return SignedInStub(session_id=session_id_for(email), max_age=3600)


def session_id_for(email: str) -> str:
    """The stand-in's session id for `email` (cookie-safe, as real ids are)."""
    return "sid_" + email.split("@")[0]


@pytest.fixture(scope="module")
def rp_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def sso_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sso")


@pytest.fixture(scope="module")
def provider(rp_port: int, sso_logs: Path) -> Iterator[OidcProvider]:
    """The provider, redirecting to the relying party of this module."""
    with running_oidc_provider(sso_logs, [callback_url(rp_port)]) as p:
        yield p


def callback_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/console/sso/callback"


def rp_config(port: int, oidc: OidcConfig) -> Config:
    return Config(
        listen=ListenConfig(admin=f"127.0.0.1:{port}"),
        secret="a test secret of at least thirty-two bytes!",
        console=ConsoleConfig(oidc=oidc),
    )


def oidc_of(provider: OidcProvider, **overrides: Any) -> OidcConfig:
    fields: dict[str, Any] = {
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
        **overrides,
    }
    return OidcConfig(**fields)


@dataclass
class RelyingParty:
    """The SSO routes being tested, and a browser-like client with its cookie jar."""

    url: str
    directory: Directory
    http: aiohttp.ClientSession

    @property
    def callback(self) -> str:
        return self.url + "/console/sso/callback"

    def cookie(self, name: str) -> str | None:
        for morsel in self.http.cookie_jar:
            if morsel.key == name:
                return morsel.value
        return None


StartRp = Callable[..., Awaitable[RelyingParty]]


@pytest.fixture
async def start_rp(rp_port: int) -> AsyncIterator[StartRp]:
    """Start the relying party on the module's port with an `OidcConfig`."""
    servers: list[TestServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(
        oidc: OidcConfig,
        *,
        directory: Directory | None = None,
        client_timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> RelyingParty:
        directory = directory or Directory()
        console = web.Application()
        people = cast("PeopleService", directory)
        install_sso(console, rp_config(rp_port, oidc), people, timeout=client_timeout)
        root = web.Application()
        root.add_subapp("/console", console)
        server = TestServer(root, host="127.0.0.1", port=rp_port)
        await server.start_server()
        servers.append(server)
        http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            headers={"User-Agent": "sso-test-browser/1.0"},
            timeout=aiohttp.ClientTimeout(total=20),
        )
        sessions.append(http)
        return RelyingParty(f"http://127.0.0.1:{rp_port}", directory, http)

    yield start
    for http in sessions:
        await http.close()
    for server in servers:
        await server.close()
