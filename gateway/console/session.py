"""Who is looking at a console page: the session cookie read on every request.

The session is read from the people service each time (no cache), so a session revoked
by `keygate sessions revoke` ends at the person's next click. Pages that need a person
send anyone else to the sign-in page, remembering where they were going.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from gateway.console.cookies import SESSION_COOKIE, clear_session_cookie, secure_cookies
from gateway.console.views import safe_next
from gateway.keys.models import Actor
from gateway.observability.request_ids import request_id, valid_traceparent
from gateway.people.models import SessionInfo
from gateway.people.service import PeopleService

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Reachable without a session: signing in, accepting an invite, single sign-on, assets.
PUBLIC_PREFIXES = ("/console/sign-in", "/console/invite/", "/console/sso/", "/console/static/")
SIGN_IN = "/console/sign-in"


@dataclass(frozen=True)
class Viewer:
    """The signed-in person of this request and their Actor for the services."""

    session_id: str
    info: SessionInfo
    actor: Actor

    @property
    def email(self) -> str:
        return self.info.user.email

    @property
    def csrf_token(self) -> str:
        return self.info.csrf_token

    def role_in(self, org: str) -> str | None:
        return self.info.roles.get(org)


VIEWER = web.RequestKey("viewer", Viewer)
PEOPLE = web.AppKey("console_people", PeopleService)
PUBLIC_URL = web.AppKey("console_public_url", str)  # "" when console.public_url is unset


def viewer(request: web.Request) -> Viewer:
    """The signed-in person (the middleware has already sent anyone else away)."""
    return request[VIEWER]


def optional_viewer(request: web.Request) -> Viewer | None:
    return request.get(VIEWER)


def sign_in_url(request: web.Request) -> str:
    """The sign-in page, coming back to this page (GET) or the console's home."""
    target = request.path_qs if request.method == "GET" else "/console/"
    target = safe_next(target)
    if target == "/console/":
        return SIGN_IN
    return SIGN_IN + "?" + urlencode({"next": target})


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the Viewer; pages other than the public ones need one."""
    path = request.path
    if path.startswith("/console/static/"):
        return await handler(request)
    people = request.app[PEOPLE]
    session_id = request.cookies.get(SESSION_COOKIE)
    info = await people.session(session_id) if session_id else None
    if info is not None and session_id is not None:
        request[VIEWER] = Viewer(
            session_id,
            info,
            people.actor_for(
                info,
                client_ip=request.remote,
                user_agent=request.headers.get("User-Agent"),
                request_id=request_id(request.headers.get("X-Request-Id")),
                traceparent=valid_traceparent(request.headers.get("traceparent")),
            ),
        )
    elif not path.startswith(PUBLIC_PREFIXES):
        response = web.HTTPSeeOther(sign_in_url(request))
        if session_id:  # ended, expired or revoked: the browser may forget it
            public_url = request.app[PUBLIC_URL] or None
            clear_session_cookie(response, secure=secure_cookies(request, public_url))
        raise response
    return await handler(request)
