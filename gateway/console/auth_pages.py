"""Signing in and out, accepting an invite, and the console's home.

These are the console's only form posts (everything else goes through the admin API
with `fetch`). Each post must come from our own origin; sign-out also carries the
session's CSRF token. Errors are shown on the form, never revealing whether an account
exists (the people service words them).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway.console.cookies import clear_session_cookie, secure_cookies, set_session_cookie
from gateway.console.forms import read_form
from gateway.console.render import CONFIG, org_choices, render
from gateway.console.security import csrf_ok, same_origin
from gateway.console.session import PEOPLE, optional_viewer, viewer
from gateway.console.views import safe_next
from gateway.keys.errors import InvalidInput
from gateway.people.errors import SignInFailed, SignInThrottled
from gateway.people.models import SignedIn

MAX_FIELD = 4096  # a longer email or password is not one of ours
MIN_PASSWORD = 12  # the people service's rule, checked first to keep what was typed
TOO_SHORT = "Use at least 12 characters."


async def home(request: web.Request) -> web.StreamResponse:
    """`/console/`: the first org whose keys the person sees, else the first org."""
    orgs = await org_choices(request)
    for org in orgs:
        if org.sees_keys:
            raise web.HTTPSeeOther(f"/console/orgs/{quote(org.slug)}/keys")
    if orgs:
        raise web.HTTPSeeOther(f"/console/orgs/{quote(orgs[0].slug)}/keys")
    return await render(request, "no_orgs.html", {"title": "No organisation yet"})


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    next_path = safe_next(request.query.get("next"))
    if optional_viewer(request) is not None:
        raise web.HTTPSeeOther(next_path)
    return await _sign_in_form(request, next_path=next_path)


async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    next_path = safe_next(_text(form.get("next")))
    email = _text(form.get("email"))
    if not same_origin(request, _public_url(request)):
        return await _refused(request)
    password = _text(form.get("password"))
    if not email or not password:
        return await _sign_in_form(
            request,
            next_path=next_path,
            email=email,
            error="Enter your email and password.",
            status=400,
        )
    people = request.app[PEOPLE]
    try:
        signed_in = await people.sign_in_password(
            email,
            password,
            client_ip=request.remote,
            user_agent=request.headers.get("User-Agent"),
        )
    except SignInThrottled as exc:
        reply = await _sign_in_form(
            request, next_path=next_path, email=email, error=exc.message, status=429
        )
        reply.headers["Retry-After"] = str(exc.retry_after)
        return reply
    except (SignInFailed, InvalidInput) as exc:
        message = exc.message if isinstance(exc, SignInFailed) else SignInFailed().message
        return await _sign_in_form(
            request, next_path=next_path, email=email, error=message, status=401
        )
    return _signed_in(request, signed_in, next_path)


async def sign_out(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    form = await read_form(request)
    if not same_origin(request, _public_url(request)) or not csrf_ok(
        form.get("csrf_token"), who.csrf_token
    ):
        return await _refused(request)
    await request.app[PEOPLE].sign_out(who.session_id)
    response = web.HTTPSeeOther("/console/sign-in?signed_out=1")
    clear_session_cookie(response, secure=secure_cookies(request, _public_url(request)))
    raise response


async def invite_page(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    member = await request.app[PEOPLE].pending_invite(token)
    if member is None:
        return await _invite_gone(request)
    return await render(request, "invite.html", {"member": member, "title": "Join " + member.org})


async def accept_invite(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    people = request.app[PEOPLE]
    if not same_origin(request, _public_url(request)):
        return await _refused(request)
    member = await people.pending_invite(token)
    if member is None:
        return await _invite_gone(request)
    form = await read_form(request)
    name = _text(form.get("name")).strip()
    password = _text(form.get("password"))
    confirm = _text(form.get("confirm"))
    errors: dict[str, str] = {}
    if len(password) < MIN_PASSWORD:
        errors["password"] = TOO_SHORT
    elif password != confirm:
        errors["confirm"] = "The two passwords are not the same."
    status, retry_after = 400, None
    if not errors:
        try:
            signed_in = await people.accept_invite(
                token,
                password,
                name=name or None,
                client_ip=request.remote,
                user_agent=request.headers.get("User-Agent"),
            )
        except SignInThrottled as exc:
            errors["password"] = exc.message
            status, retry_after = 429, exc.retry_after
        except InvalidInput as exc:
            if exc.field == "token":
                return await _invite_gone(request)
            errors[exc.field if exc.field in ("name", "password") else "password"] = exc.message
        else:
            return _signed_in(request, signed_in, f"/console/orgs/{quote(member.org)}/keys")
    context: dict[str, Any] = {
        "member": member,
        "name": name,
        "errors": errors,
        "title": "Join " + member.org,
    }
    reply = await render(request, "invite.html", context, status=status)
    if retry_after is not None:
        reply.headers["Retry-After"] = str(retry_after)
    return reply


def _signed_in(request: web.Request, signed_in: SignedIn, next_path: str) -> web.StreamResponse:
    response = web.HTTPSeeOther(next_path)
    set_session_cookie(
        response,
        signed_in.session_id,
        secure=secure_cookies(request, _public_url(request)),
        max_age=signed_in.max_age,
    )
    raise response


async def _sign_in_form(
    request: web.Request,
    *,
    next_path: str,
    email: str = "",
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    context = {
        "title": "Sign in",
        "next": next_path,
        "email": email,
        "error": error,
        "signed_out": request.query.get("signed_out") == "1",
    }
    return await render(request, "sign_in.html", context, status=status)


async def _invite_gone(request: web.Request) -> web.Response:
    return await render(
        request,
        "error.html",
        {
            "title": "This invite link cannot be used",
            "message": "It has expired or was already used. Ask an owner of your "
            "organisation for a new link.",
            "sign_in_link": True,
        },
        status=410,
    )


async def _refused(request: web.Request) -> web.Response:
    """A form post from another site (or without the session's token): refused."""
    return await render(
        request,
        "error.html",
        {
            "title": "Request refused",
            "message": "This form was not sent from a page of this console. Open the "
            "console again and retry.",
        },
        status=403,
    )


def _text(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        return ""
    return value


def _public_url(request: web.Request) -> str | None:
    return request.app[CONFIG].console.public_url
