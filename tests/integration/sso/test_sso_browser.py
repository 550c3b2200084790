"""Chromium through the provider's own login page: the cookies, redirects and SameSite
rules of a real browser (http on 127.0.0.1), against the relying party's routes."""

from __future__ import annotations

from playwright.async_api import async_playwright

from gateway.console.cookies import SESSION_COOKIE, SSO_COOKIE
from tests.integration.sso.conftest import StartRp, oidc_of, session_id_for
from tests.support.oidc_provider import ADA, EVE, OidcProvider, browser_sign_in

CHROMIUM = "/usr/bin/chromium"


async def test_chromium_signs_in_and_is_refused_when_unverified(
    provider: OidcProvider, start_rp: StartRp
) -> None:
    rp = await start_rp(oidc_of(provider))
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(f"{rp.url}/console/sso/start?next=/console/orgs/acme/keys")
            await browser_sign_in(page, ADA)
            await page.wait_for_url(f"{rp.url}/console/orgs/acme/keys")
            cookies = {c["name"]: c for c in await context.cookies(rp.url)}
            assert cookies[SESSION_COOKIE]["value"] == session_id_for(ADA)
            assert cookies[SESSION_COOKIE]["httpOnly"]
            assert SSO_COOKIE not in cookies
            assert rp.directory.calls[0]["email"] == ADA
            assert "Chrome" in (rp.directory.calls[0]["user_agent"] or "")

            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(f"{rp.url}/console/sso/start")
            await browser_sign_in(page, EVE)
            await page.wait_for_url(f"{rp.url}/console/sso/callback?**")
            alert = page.get_by_role("alert")
            assert "has not verified the email address eve@example.com" in (
                await alert.inner_text()
            )
            await page.get_by_role("link", name="Back to sign-in").wait_for()
            assert len(rp.directory.calls) == 1
        finally:
            await browser.close()
