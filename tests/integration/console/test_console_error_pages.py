"""The console's answers when a person gets something wrong, over plain HTTP: every error
is a page in words with the right status, never a 500 or a raw JSON body, and nothing is
half-done (no session minted, no invite used up)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.integration.console.conftest import unique, unique_email
from tests.support.browser import RootApi
from tests.support.gateway_process import GatewayProcess

PASSWORD = "correct horse battery staple"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # Cookies handled by hand: each test says which session it sends.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def text_of(html: str) -> str:
    """The page's words, tags and extra spaces removed (what a person reads)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#39;", "'")


async def post_form(
    http: aiohttp.ClientSession, gw: GatewayProcess, path: str, fields: dict[str, str]
) -> tuple[int, str, aiohttp.ClientResponse]:
    async with http.post(
        gw.admin_url + path,
        data=fields,
        headers={"Origin": gw.admin_url, "Content-Type": FORM},
        allow_redirects=False,
    ) as reply:
        return reply.status, await reply.text(), reply


async def test_invite_form_mistakes_are_explained_and_leave_the_link_usable(
    http: aiohttp.ClientSession, gateway: GatewayProcess, root: RootApi
) -> None:
    org = root.create_org(unique("errs"))
    link = root.invite(org, unique_email("joiner"), "admin")
    path = link[link.index("/console/") :]

    status, page, reply = await post_form(
        http, gateway, path, {"name": "Ann", "password": "short", "confirm": "short"}
    )
    assert status == 400 and "Use at least 12 characters." in text_of(page)
    assert "Set-Cookie" not in reply.headers
    status, page, reply = await post_form(
        http, gateway, path, {"name": "Ann", "password": PASSWORD, "confirm": PASSWORD + "!"}
    )
    assert status == 400 and "The two passwords are not the same." in text_of(page)
    assert 'value="Ann"' in page  # what was typed stays typed
    assert "Set-Cookie" not in reply.headers

    # The link still works after the mistakes, once.
    status, _, reply = await post_form(
        http, gateway, path, {"name": "Ann", "password": PASSWORD, "confirm": PASSWORD}
    )
    assert status == 303 and reply.headers["Location"] == f"/console/orgs/{org}/keys"
    assert "keygate_session=" in reply.headers["Set-Cookie"]
    status, page, _ = await post_form(
        http, gateway, path, {"name": "Ann", "password": PASSWORD, "confirm": PASSWORD}
    )
    assert status == 410, status
    assert "This invite link cannot be used" in text_of(page)
    async with http.get(gateway.admin_url + path) as reply:
        assert "This invite link cannot be used" in text_of(await reply.text())


async def test_sign_in_mistakes_and_throttling_are_explained(
    http: aiohttp.ClientSession, gateway: GatewayProcess, root: RootApi
) -> None:
    org = root.create_org(unique("throttle"))
    email = unique_email("locked")
    link = root.invite(org, email, "admin")
    path = link[link.index("/console/") :]
    status, _, _ = await post_form(
        http, gateway, path, {"name": "Lee", "password": PASSWORD, "confirm": PASSWORD}
    )
    assert status == 303

    status, page, _ = await post_form(http, gateway, "/console/sign-in", {"email": email})
    assert status == 400 and "Enter your email and password." in text_of(page)
    wrong = []
    for _ in range(5):  # the per-email allowance of a window
        status, page, _ = await post_form(
            http, gateway, "/console/sign-in", {"email": email, "password": "not the password"}
        )
        wrong.append(status)
    assert wrong == [401] * 5, wrong
    assert "do not match an account that can sign in" in text_of(page)
    # Throttled now: even the right password is refused, with when to come back.
    status, page, reply = await post_form(
        http, gateway, "/console/sign-in", {"email": email.upper(), "password": PASSWORD}
    )
    assert status == 429, text_of(page)
    assert int(reply.headers["Retry-After"]) > 0
    assert "Set-Cookie" not in reply.headers
    assert "Too many" in text_of(page)


async def test_signed_in_pages_without_an_org_and_revisiting_sign_in(
    http: aiohttp.ClientSession, gateway: GatewayProcess, root: RootApi
) -> None:
    org = root.create_org(unique("gone"))
    keeper = root.invite(org, unique_email("owner"), "owner")
    await post_form(
        http,
        gateway,
        keeper[keeper.index("/console/") :],
        {"name": "Own", "password": PASSWORD, "confirm": PASSWORD},
    )
    email = unique_email("removed")
    link = root.invite(org, email, "admin")
    _, _, reply = await post_form(
        http,
        gateway,
        link[link.index("/console/") :],
        {"name": "Rem", "password": PASSWORD, "confirm": PASSWORD},
    )
    session = reply.cookies["keygate_session"].value
    cookie = {"Cookie": f"keygate_session={session}"}

    # Signed in, the sign-in page sends the person on, to `next` when it is ours.
    async with http.get(
        gateway.admin_url + "/console/sign-in?next=/console/orgs/" + org + "/audit",
        headers=cookie,
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and r.headers["Location"] == f"/console/orgs/{org}/audit"
    async with http.get(
        gateway.admin_url + "/console/sign-in?next=//evil.example/x",
        headers=cookie,
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "/console/"

    # Removed from their only org, the person is told so instead of seeing an error.
    root.ok("DELETE", f"/orgs/{org}/members/{email}", status=204)
    async with http.get(
        gateway.admin_url + "/console/", headers=cookie, allow_redirects=False
    ) as r:
        page = await r.text()
        assert r.status == 200, page
        assert "No organisation yet" in text_of(page)
    async with http.get(
        gateway.admin_url + f"/console/orgs/{org}/keys", headers=cookie, allow_redirects=False
    ) as r:
        assert r.status == 404
        assert "Content-Security-Policy" in r.headers
    # A method a page does not take is a page in words too.
    async with http.delete(
        gateway.admin_url + "/console/sign-in", headers=cookie, allow_redirects=False
    ) as r:
        assert r.status == 405
        assert "This page cannot be used that way." in text_of(await r.text())
