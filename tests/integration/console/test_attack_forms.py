"""Malformed posts to the console's forms: each is refused in words (400, 413 or 415),
with the console's security headers, and never a 500; the invite link they were aimed at
still works afterwards. Raw HTTP, no browser: a browser would never send these."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.integration.console.conftest import PASSWORD, unique, unique_email
from tests.support.credentials import ROOT_TOKEN
from tests.support.gateway_process import GatewayProcess

FORM = "application/x-www-form-urlencoded"
MALFORMED: list[tuple[str, bytes, str, set[int]]] = [
    ("invalid UTF-8 %-escape", b"email=%ff%fe&password=x", FORM, {400}),
    ("raw non-UTF-8 bytes", b"\xff\xfe=\xff", FORM, {400}),
    ("another charset", b"email=a%40b.c&password=aaaaaaaaaaaaa", FORM + "; charset=latin-1", {415}),
    ("unknown charset", b"email=a%40b.c", FORM + "; charset=nonsense", {415}),
    (
        "multipart",
        b'--x\r\nContent-Disposition: form-data; name="email"\r\n\r\n\xff\r\n--x--\r\n',
        "multipart/form-data; boundary=x",
        {415},
    ),
    ("broken multipart", b"--x\r\nbroken", "multipart/form-data; boundary=x", {415}),
    ("JSON", b'{"email": "a@b.c"}', "application/json", {415}),
    ("too large", b"email=" + b"a" * 70_000, FORM, {413}),
    ("too many fields", b"&".join(b"f%d=1" % i for i in range(200)), FORM, {400}),
]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def signed_in_invite(http: aiohttp.ClientSession, gateway: GatewayProcess) -> tuple[str, str]:
    """(session id of a new owner, path of an unused invite link for a second person)."""
    base, root = gateway.admin_url, {"Authorization": f"Bearer {ROOT_TOKEN}"}
    org = unique("forms")
    async with http.post(base + "/admin/v1/orgs", json={"slug": org}, headers=root) as r:
        assert r.status == 201
    paths = []
    for role in ("owner", "admin"):
        body = {"email": unique_email(role), "role": role}
        async with http.post(base + f"/admin/v1/orgs/{org}/members", json=body, headers=root) as r:
            paths.append(urlsplit((await r.json())["invite_url"]).path)
    form = {"password": PASSWORD, "confirm": PASSWORD}
    async with http.post(
        base + paths[0], data=form, headers={"Origin": base}, allow_redirects=False
    ) as r:
        assert r.status == 303
        return r.cookies["keygate_session"].value, paths[1]


@pytest.mark.parametrize(("what", "body", "content_type", "statuses"), MALFORMED)
async def test_malformed_posts_are_refused_in_words(
    http: aiohttp.ClientSession,
    gateway: GatewayProcess,
    what: str,
    body: bytes,
    content_type: str,
    statuses: set[int],
) -> None:
    base = gateway.admin_url
    session_id, invite = await signed_in_invite(http, gateway)
    headers = {
        "Origin": base,
        "Content-Type": content_type,
        "Cookie": f"keygate_session={session_id}",
    }
    for path in ("/console/sign-in", "/console/sign-out", invite):
        async with http.post(base + path, data=body, headers=headers, allow_redirects=False) as r:
            text = await r.text()
            assert r.status in statuses, (what, path, r.status, text[:200])
            assert "Content-Security-Policy" in r.headers, (what, path)
            assert "<h1>" in text, (what, path)
    # Nothing was consumed: the session is live and the invite link still sets a password.
    async with http.get(
        base + "/admin/v1/me", headers={"Cookie": f"keygate_session={session_id}"}
    ) as r:
        assert r.status == 200
    form = {"password": PASSWORD, "confirm": PASSWORD}
    async with http.post(
        base + invite, data=form, headers={"Origin": base}, allow_redirects=False
    ) as r:
        assert r.status == 303, what


async def test_a_chunked_body_is_bounded_too(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    """No Content-Length to check up front: the reader stops at the limit itself."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"email="
        for _ in range(64):
            yield b"a" * 1024

    base = gateway.admin_url
    headers = {"Origin": base, "Content-Type": FORM}
    async with http.post(base + "/console/sign-in", data=chunks(), headers=headers) as r:
        assert r.status == 413
        assert "Content-Security-Policy" in r.headers
