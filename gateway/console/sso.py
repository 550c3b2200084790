"""The console's single sign-on routes (SPEC §10): `/console/sso/start` sends the browser to
the OpenID provider, `/console/sso/callback` checks its answer and signs the person in.

The pending sign-in (state, nonce, PKCE verifier, where to go next) travels in the short-lived
`keygate_sso` cookie, signed with a key derived from the server secret (a JWS, HS256, through
joserfc): nothing is stored server-side, any worker can finish a sign-in another started,
and the cookie is cleared at the callback so a replayed callback finds nothing to finish.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from gateway.config import Config
from gateway.console.cookies import (
    SSO_COOKIE,
    SSO_COOKIE_MAX_AGE,
    clear_sso_cookie,
    secure_cookies,
    set_session_cookie,
    set_sso_cookie,
)
from gateway.console.oidc import DEFAULT_TIMEOUT, OidcClient, PendingSignIn, SsoFailed
from gateway.console.views import safe_next
from gateway.keys.errors import ServiceError

if TYPE_CHECKING:
    from gateway.people.service import PeopleService

log = logging.getLogger("keygate.console.sso")

CALLBACK_PATH = "/console/sso/callback"
DEFAULT_NEXT = "/console/"
SIGN_IN_PAGE = "/console/sign-in"
COOKIE_ALGORITHM = "HS256"
CLOCK_SKEW = 60  # a cookie "created" this far in the future is still accepted

SSO_CLIENT = web.AppKey("sso_client", OidcClient)


def redirect_uri(config: Config) -> str:
    """Where the provider sends the browser back: registered with the provider as is."""
    origin = config.console.public_url or f"http://{config.listen.admin}"
    return origin.rstrip("/") + CALLBACK_PATH


def install_sso(
    app: web.Application,
    config: Config,
    people: PeopleService,
    *,
    secret: bytes | None = None,
    timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
) -> None:
    """Add `GET /sso/start` and `GET /sso/callback` to the console app (mounted at
    /console) and the lifetime of the HTTP client that talks to the provider. Nothing is
    added without `console.oidc`.

    `secret` signs the pending sign-in cookie: pass the server secret so every worker and
    instance accepts it; without one, `config.secret`, else a random per-process key (a
    single-process dev server only)."""
    oidc = config.console.oidc
    if oidc is None:
        return
    uri = redirect_uri(config)

    async def client_lifetime(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        ) as session:
            app[SSO_CLIENT] = OidcClient(oidc, uri, session)
            yield

    app.cleanup_ctx.append(client_lifetime)
    routes = SsoRoutes(config, people, _cookie_key(secret, config))
    app.router.add_get("/sso/start", routes.start, name="sso-start")
    app.router.add_get("/sso/callback", routes.callback, name="sso-callback")


class SsoRoutes:
    """The two handlers, sharing the cookie key and the people service."""

    def __init__(
        self,
        config: Config,
        people: PeopleService,
        cookie_key: OctKey,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._people = people
        self._key = cookie_key
        self._clock = clock

    def _secure(self, request: web.Request) -> bool:
        return secure_cookies(request, self._config.console.public_url)

    async def start(self, request: web.Request) -> web.StreamResponse:
        """Redirect to the provider with a fresh state, nonce and PKCE challenge."""
        client = request.app[SSO_CLIENT]
        try:
            url, pending = await client.start(safe_next(request.query.get("next")))
        except SsoFailed as failed:
            return self._failure(request, failed.reason)
        response = web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
        set_sso_cookie(response, seal_pending(pending, self._key), secure=self._secure(request))
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """Finish the sign-in the cookie describes; the cookie is cleared either way."""
        client = request.app[SSO_CLIENT]
        try:
            pending = open_pending(request.cookies.get(SSO_COOKIE), self._key, self._clock())
            identity = await client.finish(request.query, pending)
            signed_in = await self._people.sign_in_sso(
                identity.email,
                identity.name,
                client_ip=request.remote,
                user_agent=request.headers.get("User-Agent"),
            )
        except SsoFailed as failed:
            return self._failure(request, failed.reason)
        except ServiceError as refused:  # no account, disabled, throttled: the service's words
            return self._failure(request, refused.message)
        response = web.Response(
            status=303, headers={"Location": pending.next_path, "Cache-Control": "no-store"}
        )
        secure = self._secure(request)
        clear_sso_cookie(response, secure=secure)
        set_session_cookie(response, signed_in.session_id, secure=secure, max_age=signed_in.max_age)
        return response

    def _failure(self, request: web.Request, reason: str) -> web.Response:
        log.info("single sign-on refused: %s", reason)
        response = failure_page(reason)
        clear_sso_cookie(response, secure=self._secure(request))
        return response


def failure_page(reason: str) -> web.Response:
    """400 with the reason in words and the way back to the sign-in page."""
    sentence = reason[:1].upper() + reason[1:]
    text = html.escape(sentence if sentence.endswith((".", "!", "?")) else sentence + ".")
    body = (
        '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>Sign-in failed · Keygate</title></head>\n<body>\n<main>\n"
        "<h1>Single sign-on did not complete</h1>\n"
        f'<p id="sso-error" role="alert">{text}</p>\n'
        f'<p><a href="{SIGN_IN_PAGE}">Back to sign-in</a></p>\n'
        "</main>\n</body>\n</html>\n"
    )
    return web.Response(
        status=400, text=body, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def _cookie_key(secret: bytes | None, config: Config) -> OctKey:
    base = secret or (config.secret.encode() if config.secret else secrets.token_bytes(32))
    # A key of its own: the server secret is used for other MACs too.
    derived = hmac.new(base, b"keygate console sso cookie v1", hashlib.sha256).digest()
    return OctKey.import_key(derived)


def seal_pending(pending: PendingSignIn, key: OctKey) -> str:
    """The cookie value: the pending sign-in, signed."""
    payload = {
        "state": pending.state,
        "nonce": pending.nonce,
        "verifier": pending.code_verifier,
        "next": pending.next_path,
        "iat": int(pending.created_at),
    }
    data = json.dumps(payload, separators=(",", ":")).encode()
    return jws.serialize_compact(
        {"alg": COOKIE_ALGORITHM}, data, key, algorithms=[COOKIE_ALGORITHM]
    )


def open_pending(value: str | None, key: OctKey, now: float) -> PendingSignIn:
    """The pending sign-in the cookie carries, if it is ours, intact and recent."""
    if not value:
        raise SsoFailed(
            "no sign-in was started in this browser, or it was already finished or took "
            "longer than 10 minutes; start again"
        )
    try:
        payload = jws.deserialize_compact(value, key, algorithms=[COOKIE_ALGORITHM]).payload
        data = json.loads(payload or b"")
        pending = PendingSignIn(
            state=_text(data, "state"),
            nonce=_text(data, "nonce"),
            code_verifier=_text(data, "verifier"),
            next_path=safe_next(_text(data, "next")),
            created_at=float(data["iat"]),
        )
    except (JoseError, ValueError, KeyError, TypeError):
        raise SsoFailed(
            "the sign-in cookie was altered or comes from another server; start again"
        ) from None
    if not (now - SSO_COOKIE_MAX_AGE <= pending.created_at <= now + CLOCK_SKEW):
        raise SsoFailed("the sign-in took longer than 10 minutes; start again")
    return pending


def _text(data: object, name: str) -> str:
    if not isinstance(data, dict) or not isinstance(data.get(name), str):
        raise ValueError(name)
    value: str = data[name]
    return value
