"""Single sign-on against a real OpenID provider (oidc-provider on Node), driven by an
aiohttp client playing the browser: the relying party's routes, start to callback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest

from gateway.config import OidcConfig
from gateway.console.cookies import SESSION_COOKIE, SSO_COOKIE
from tests.integration.sso.conftest import (
    Directory,
    RelyingParty,
    StartRp,
    callback_url,
    oidc_of,
    session_id_for,
)
from tests.support.oidc_provider import (
    ADA,
    EVE,
    GRACE,
    NO_EMAIL,
    OidcProvider,
    running_oidc_provider,
    sign_in_at_provider,
)


async def begin(rp: RelyingParty, next_path: str | None = None) -> str:
    """GET /console/sso/start: the provider URL it redirects to (the sso cookie is set)."""
    query = f"?{urlencode({'next': next_path})}" if next_path else ""
    async with rp.http.get(f"{rp.url}/console/sso/start{query}", allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"
        return resp.headers["Location"]


async def callback(rp: RelyingParty, url: str) -> tuple[int, str, aiohttp.ClientResponse]:
    async with rp.http.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp


async def signed_in_callback(rp: RelyingParty, login: str, next_path: str | None = None) -> str:
    """Start, sign in at the provider as `login`: the callback URL it sends back."""
    authorize = await begin(rp, next_path)
    return await sign_in_at_provider(rp.http, authorize, login, rp.callback)


def with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def refused(status: int, body: str, words: str) -> None:
    assert status == 400, body
    assert words.lower() in body.lower(), body
    assert 'href="/console/sign-in"' in body


async def test_verified_invited_person_signs_in(provider: OidcProvider, start_rp: StartRp) -> None:
    rp = await start_rp(oidc_of(provider))
    authorize = await begin(rp, "/console/orgs/acme/keys")
    params = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(provider.issuer + "/auth?")
    assert params["response_type"] == ["code"]
    assert params["client_id"] == [provider.client_id]
    assert params["redirect_uri"] == [rp.callback]
    assert params["code_challenge_method"] == ["S256"]
    assert len(params["code_challenge"][0]) == 43  # base64url of a SHA-256
    assert params["scope"] == ["openid email profile"]
    assert len(params["state"][0]) >= 32 and len(params["nonce"][0]) >= 32
    assert rp.cookie(SSO_COOKIE)

    url = await sign_in_at_provider(rp.http, authorize, ADA, rp.callback)
    status, body, resp = await callback(rp, url)

    assert status == 303, body
    assert resp.headers["Location"] == "/console/orgs/acme/keys"
    assert rp.cookie(SESSION_COOKIE) == session_id_for(ADA)
    assert rp.cookie(SSO_COOKIE) is None  # one use
    session = resp.cookies[SESSION_COOKIE]
    assert session["httponly"] and session["samesite"] == "Lax" and session["path"] == "/"
    assert rp.directory.calls == [
        {
            "email": ADA,
            "name": "Ada Lovelace",
            "client_ip": "127.0.0.1",
            "user_agent": "sso-test-browser/1.0",
        }
    ]


async def test_email_and_name_from_the_id_token_itself(
    rp_port: int, sso_logs: Path, start_rp: StartRp
) -> None:
    """Providers that put the claims in the ID token (no userinfo call needed)."""
    with running_oidc_provider(
        sso_logs, [callback_url(rp_port)], id_token_claims=True, name="oidc-id-token-claims"
    ) as other:
        rp = await start_rp(oidc_of(other))
        status, body, _ = await callback(rp, await signed_in_callback(rp, ADA))
        assert status == 303, body
        assert rp.directory.calls[0]["email"] == ADA
        assert rp.directory.calls[0]["name"] == "Ada Lovelace"


async def test_public_client_without_a_secret(provider: OidcProvider, start_rp: StartRp) -> None:
    oidc = oidc_of(provider, client_id=provider.public_client_id, client_secret=None)
    rp = await start_rp(oidc)
    status, body, _ = await callback(rp, await signed_in_callback(rp, ADA))
    assert status == 303, body


async def test_next_outside_the_console_is_ignored(
    provider: OidcProvider, start_rp: StartRp
) -> None:
    rp = await start_rp(oidc_of(provider))
    for evil in ("https://evil.example/", "//evil.example/console/", "/\\evil.example"):
        rp.http.cookie_jar.clear()
        status, body, resp = await callback(rp, await signed_in_callback(rp, ADA, evil))
        assert status == 303, body
        assert resp.headers["Location"] == "/console/"


async def test_wrong_state_is_refused(provider: OidcProvider, start_rp: StartRp) -> None:
    rp = await start_rp(oidc_of(provider))
    url = await signed_in_callback(rp, ADA)
    status, body, _ = await callback(rp, with_query(url, state="forged-state"))
    refused(status, body, "does not belong to the sign-in started in this browser")
    assert rp.directory.calls == []
    assert rp.cookie(SSO_COOKIE) is None  # cleared: the real callback can no longer finish
    status, body, _ = await callback(rp, url)
    refused(status, body, "no sign-in was started in this browser")


async def test_missing_state_is_refused(provider: OidcProvider, start_rp: StartRp) -> None:
    rp = await start_rp(oidc_of(provider))
    url = await signed_in_callback(rp, ADA)
    status, body, _ = await callback(rp, with_query(url, state=None))
    refused(status, body, "has no state parameter")
    assert rp.directory.calls == []


async def test_callback_without_a_started_sign_in_is_refused(
    provider: OidcProvider, start_rp: StartRp
) -> None:
    """Login CSRF: a callback URL from someone else's sign-in, opened in this browser."""
    rp = await start_rp(oidc_of(provider))
    url = await signed_in_callback(rp, ADA)
    rp.http.cookie_jar.clear()
    status, body, _ = await callback(rp, url)
    refused(status, body, "no sign-in was started in this browser")
    assert rp.directory.calls == []


async def test_replayed_callback_is_refused(provider: OidcProvider, start_rp: StartRp) -> None:
    rp = await start_rp(oidc_of(provider))
    url = await signed_in_callback(rp, ADA)
    sso_cookie = rp.cookie(SSO_COOKIE)
    assert sso_cookie is not None
    status, body, _ = await callback(rp, url)
    assert status == 303, body

    # The same browser again: the cookie was cleared by the first callback.
    status, body, _ = await callback(rp, url)
    refused(status, body, "no sign-in was started in this browser")
    # With the old cookie put back (copied by an attacker): the provider refuses the code.
    rp.http.cookie_jar.clear()
    async with rp.http.get(
        url, allow_redirects=False, headers={"Cookie": f"{SSO_COOKIE}={sso_cookie}"}
    ) as resp:
        refused(resp.status, await resp.text(), "refused the sign-in code")
    assert len(rp.directory.calls) == 1


async def test_unverified_email_is_refused(provider: OidcProvider, start_rp: StartRp) -> None:
    rp = await start_rp(oidc_of(provider), directory=Directory(allowed={EVE}))
    status, body, _ = await callback(rp, await signed_in_callback(rp, EVE))
    refused(status, body, "has not verified the email address eve@example.com")
    assert rp.directory.calls == []
    assert rp.cookie(SESSION_COOKIE) is None


async def test_no_email_claim_is_refused(provider: OidcProvider, start_rp: StartRp) -> None:
    rp = await start_rp(oidc_of(provider))
    status, body, _ = await callback(rp, await signed_in_callback(rp, NO_EMAIL))
    refused(status, body, "did not share an email address")


async def test_person_without_an_account_is_told_to_ask_for_an_invite(
    provider: OidcProvider, start_rp: StartRp
) -> None:
    rp = await start_rp(oidc_of(provider))
    status, body, _ = await callback(rp, await signed_in_callback(rp, GRACE))
    refused(status, body, "ask an owner of your organisation to invite you")
    assert rp.cookie(SESSION_COOKIE) is None


async def test_tampered_sso_cookie_is_refused(provider: OidcProvider, start_rp: StartRp) -> None:
    rp = await start_rp(oidc_of(provider))
    url = await signed_in_callback(rp, ADA)
    value = rp.cookie(SSO_COOKIE)
    assert value is not None
    header, payload, signature = value.split(".")
    forged = ".".join((header, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"), signature))
    rp.http.cookie_jar.clear()
    async with rp.http.get(
        url, allow_redirects=False, headers={"Cookie": f"{SSO_COOKIE}={forged}"}
    ) as resp:
        refused(resp.status, await resp.text(), "the sign-in cookie was altered")
    assert rp.directory.calls == []


async def test_provider_error_response_is_refused(
    provider: OidcProvider, start_rp: StartRp
) -> None:
    rp = await start_rp(oidc_of(provider))
    url = await signed_in_callback(rp, ADA)
    status, body, _ = await callback(rp, with_query(url, code=None, error="access_denied"))
    refused(status, body, "cancelled or denied at the identity provider")


async def test_response_from_another_issuer_is_refused(
    provider: OidcProvider, start_rp: StartRp
) -> None:
    """RFC 9207: the provider names itself in the response (mix-up attacks)."""
    rp = await start_rp(oidc_of(provider))
    url = await signed_in_callback(rp, ADA)
    status, body, _ = await callback(rp, with_query(url, iss="https://evil.example"))
    refused(status, body, "comes from a different identity provider")


async def test_issuer_mismatch_is_refused(provider: OidcProvider, start_rp: StartRp) -> None:
    """Configured as http://localhost:PORT; the provider calls itself http://127.0.0.1:PORT."""
    rp = await start_rp(oidc_of(provider, issuer=f"http://localhost:{provider.port}"))
    async with rp.http.get(f"{rp.url}/console/sso/start", allow_redirects=False) as resp:
        refused(resp.status, await resp.text(), "says its issuer is")
    assert rp.cookie(SSO_COOKIE) is None


async def test_provider_down_is_a_clear_error(start_rp: StartRp) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        port = dead.getsockname()[1]
        rp = await start_rp(
            oidc_of_plain(f"http://127.0.0.1:{port}"),
        )
        started = time.monotonic()
        async with rp.http.get(f"{rp.url}/console/sso/start", allow_redirects=False) as resp:
            refused(resp.status, await resp.text(), "could not be reached (discovery)")
        assert time.monotonic() - started < 5
    finally:
        dead.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


async def test_provider_that_hangs_times_out(silent_server: int, start_rp: StartRp) -> None:
    rp = await start_rp(
        oidc_of_plain(f"http://127.0.0.1:{silent_server}"),
        client_timeout=aiohttp.ClientTimeout(total=1),
    )
    started = time.monotonic()
    async with rp.http.get(f"{rp.url}/console/sso/start", allow_redirects=False) as resp:
        refused(resp.status, await resp.text(), "did not answer in time (discovery)")
    assert time.monotonic() - started < 4


async def test_provider_down_at_the_callback(
    rp_port: int, sso_logs: Path, start_rp: StartRp
) -> None:
    """Discovery succeeded at the start; the provider is gone by the callback."""
    with running_oidc_provider(sso_logs, [callback_url(rp_port)], name="oidc-stopping") as gone:
        rp = await start_rp(oidc_of(gone))
        url = await signed_in_callback(rp, ADA)
        gone.process.stop(expect_code=None)
        await asyncio.sleep(0)
        status, body, _ = await callback(rp, url)
        refused(status, body, "could not be reached (token exchange)")


def oidc_of_plain(issuer: str) -> OidcConfig:
    return OidcConfig(issuer=issuer, client_id="keygate-console", client_secret="x")
