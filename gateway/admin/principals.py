"""Who is calling the admin API: the root token, an API key acting inside its own org, or a
person signed in to the console (the session cookie).

Order: a Bearer credential (root token or API key) wins; without one, the session cookie;
without either, anonymous root on loopback-only listeners that allow it. A cookie is sent
by the browser on its own, so every state change it authenticates must also carry the
session's CSRF token and come from our own origin (403 csrf_failed otherwise).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.admin.telemetry import ADMIN_KEY, PRINCIPAL
from gateway.auth.credentials import read_credential
from gateway.auth.errors import Refusal
from gateway.auth.key_lookup import KeyLookup
from gateway.config import KeysConfig
from gateway.console.cookies import SESSION_COOKIE, loopback
from gateway.keys.models import Actor
from gateway.observability.request_ids import valid_traceparent
from gateway.people.credentials import same_token

if TYPE_CHECKING:
    from gateway.people.service import PeopleService

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
MAX_USER_AGENT = 512


class AdminUnauthorized(Refusal):
    status = 401
    code = "unauthorized"
    message = "Send the admin token or an API key with keys:read / keys:manage as a Bearer token."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="keygate-admin"'}


class SessionEnded(AdminUnauthorized):
    message = "Your console session has ended (signed out, expired or revoked): sign in again."


class CsrfFailed(Refusal):
    status = 403
    code = "csrf_failed"
    message = (
        "A change made with the console's session cookie needs the session's X-CSRF-Token "
        "header and must come from this site's own origin."
    )


@dataclass(frozen=True)
class AdminAuth:
    root_token: str | None
    allow_anonymous_root: bool  # loopback-only listeners with allow_unauthenticated_loopback
    resolver: KeyLookup
    keys: KeysConfig
    people: PeopleService | None = None  # None: no console sessions (cookie ignored)
    public_url: str | None = None  # console.public_url: an Origin also accepted

    async def actor(self, request: web.Request, request_id: str) -> Actor:
        """The acting principal, with the request's context for the audit log."""
        user_agent = request.headers.get("User-Agent")
        root = Actor(
            principal="root",
            client_ip=request.remote,
            request_id=request_id,
            traceparent=valid_traceparent(request.headers.get("traceparent")),
            user_agent=user_agent[:MAX_USER_AGENT] if user_agent else None,
        )
        try:
            presented = read_credential(request.headers)
        except Refusal:
            raise AdminUnauthorized() from None
        if presented is None:
            session_id = request.cookies.get(SESSION_COOKIE)
            if session_id is not None and self.people is not None:
                return await self._person(request, session_id, root)
            if self.allow_anonymous_root:
                # Ambient authority too (any page the browser on this machine shows can
                # send to a loopback port): a browser's cross-site change is refused, and
                # so is every request naming another host (DNS rebinding: a page of
                # evil.example whose name now resolves to 127.0.0.1 is "same-origin" with
                # itself, but its requests say `Host: evil.example`).
                if not loopback(request):
                    raise AdminUnauthorized()
                if request.method not in SAFE_METHODS and self._cross_site(request):
                    raise CsrfFailed()
                request[PRINCIPAL] = root.principal
                return root
            raise AdminUnauthorized()
        if self.root_token and hmac.compare_digest(presented.encode(), self.root_token.encode()):
            request[PRINCIPAL] = root.principal
            return root
        try:
            state = await self.resolver.identify(presented, request.remote)
        except Refusal as refusal:
            if refusal.key is not None:  # a known key refused: the access log names it
                request[ADMIN_KEY] = refusal.key
            if refusal.status in (429, 503):
                # Throttled (someone guessed at this key's id) or stores unreachable: the
                # key may be right, so it must not look invalid (SPEC §3 steps 6 and 7).
                raise
            raise AdminUnauthorized() from None
        request[PRINCIPAL], request[ADMIN_KEY] = f"key:{state.display_prefix}", state
        # The key's own holdings travel with it: they are its ceiling (gateway/keys/ceiling.py).
        return replace(
            root,
            principal=f"key:{state.display_prefix}",  # SPEC §1: key:<display prefix>
            org=state.org,
            scopes=state.scopes,
            env=state.env,
            expires_at=(
                None if state.expires_at is None else datetime.fromtimestamp(state.expires_at, UTC)
            ),
            rate_limit=state.rate_limit,
        )

    async def _person(self, request: web.Request, session_id: str, context: Actor) -> Actor:
        """The signed-in person; a state change also needs the CSRF token and our Origin."""
        assert self.people is not None
        info = await self.people.session(session_id)
        if info is None:
            raise SessionEnded()
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not same_token(sent, info.csrf_token):
                raise CsrfFailed()
            if not self._same_origin(request):
                raise CsrfFailed()
        actor = self.people.actor_for(
            info,
            client_ip=context.client_ip,
            user_agent=context.user_agent,
            request_id=context.request_id,
            traceparent=context.traceparent,
        )
        request[PRINCIPAL] = actor.principal
        return actor

    def _cross_site(self, request: web.Request) -> bool:
        """A browser says the request comes from another site. Browsers send `Origin` on
        every cross-origin state change (and `Sec-Fetch-Site`); scripts and curl send
        neither, and a browser cannot leave them out."""
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return True
        return "Origin" in request.headers and not self._same_origin(request)

    def _same_origin(self, request: web.Request) -> bool:
        """The `Origin` header names this listener as the request reached it (scheme and
        Host), or console.public_url (behind a TLS-terminating proxy)."""
        origin = request.headers.get("Origin")
        if not origin or origin == "null":
            return False
        own = f"{request.scheme}://{request.host}"
        return origin in (own, self.public_url)


AUTH = web.AppKey("auth", AdminAuth)  # where the admin app keeps its AdminAuth


async def request_actor(request: web.Request, request_id: str) -> Actor:
    """The acting principal of an admin API request (the app's AdminAuth decides)."""
    return await request.app[AUTH].actor(request, request_id)
