"""People of the console through the admin API: one real `keygate serve` (console pages
off: these tests go through /admin/v1 and the CLI), and the people service in-process on
the same stores for what only the console's pages call (accepting an invite, signing in).

Nothing is truncated between tests: each makes its own orgs and people (unique names).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from gateway.config import ConsoleConfig, load_config
from gateway.keys.hashing import SecretHasher
from gateway.people.models import SignedIn
from gateway.people.service import PeopleService
from gateway.store.db import Database
from tests.support.admin_client import AdminClient
from tests.support.configs import TEST_CONFIG, gateway_env, operator_config
from tests.support.credentials import ROOT_TOKEN, SECRET
from tests.support.errors import Reply
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.stores import Stores

PASSWORD = "correct horse battery staple"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) people-tests"


def unique_email(label: str = "p") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture(scope="package")
def people_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = operator_config(echo_upstream.url, closed_port(), console={"enabled": False})
    log_dir = tmp_path_factory.mktemp("people")
    gw = start_gateway(config, log_dir, gateway_env(stores), name="people-gateway")
    with stopped_cleanly(gw):
        yield gw


@pytest.fixture
def gateway(people_gateway: GatewayProcess) -> GatewayProcess:
    assert people_gateway.process.alive(), people_gateway.process.tail()
    return people_gateway


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: each call says which session it sends.
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30), cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield session


@pytest.fixture
def root(http: aiohttp.ClientSession, gateway: GatewayProcess) -> AdminClient:
    return AdminClient(http, gateway.admin_url, ROOT_TOKEN)


def make_people(database_url: str, clock: Any = None, **console: Any) -> PeopleService:
    config = load_config(str(TEST_CONFIG))
    hasher = SecretHasher(config.keys.argon2, threads=1)
    kwargs = {} if clock is None else {"clock": clock}
    return PeopleService(
        Database(database_url), hasher, SECRET.encode(), ConsoleConfig(**console), **kwargs
    )


@pytest.fixture
async def people(stores: Stores) -> AsyncIterator[PeopleService]:
    """The people service in-process, on the gateway's stores and secret (so the CSRF
    tokens it derives are the gateway's)."""
    service = make_people(stores.database_url)
    try:
        yield service
    finally:
        await service.db.close()
        service.hasher.close()


@dataclass
class Person:
    """A signed-in person calling the admin API with their session cookie."""

    http: aiohttp.ClientSession
    base_url: str
    email: str
    signed_in: SignedIn

    @property
    def origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        csrf: str | None = "session",
        origin: str | None = "own",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = {
            "Cookie": f"keygate_session={self.signed_in.session_id}",
            "User-Agent": BROWSER,
        }
        if csrf is not None:
            sent["X-CSRF-Token"] = self.signed_in.info.csrf_token if csrf == "session" else csrf
        if origin is not None:
            sent["Origin"] = self.origin if origin == "own" else origin
        if body is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        url = self.base_url + ("" if path.startswith("/admin/") else "/admin/v1") + path
        data = None if body is None else json.dumps(body)
        async with self.http.request(method, url, data=data, headers=sent) as response:
            return Reply(response.status, response.headers, await response.text())


def token_of(invite_url: str) -> str:
    path = urlsplit(invite_url).path
    assert path.startswith("/console/invite/"), invite_url
    return path.rsplit("/", 1)[-1]


async def join(
    root: AdminClient,
    people: PeopleService,
    org: str,
    role: str,
    *,
    email: str | None = None,
) -> Person:
    """Invite a new person to `org` through the API (as root), accept the link and sign in."""
    email = email or unique_email(role)
    invited = (await root.call("POST", f"/orgs/{org}/members", {"email": email, "role": role})).ok(
        201
    )
    signed_in = await people.accept_invite(
        token_of(invited["invite_url"]), PASSWORD, client_ip="127.0.0.1", user_agent=BROWSER
    )
    return Person(root.session, root.base_url, email, signed_in)
