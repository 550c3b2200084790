"""The console's cookies: the session id (server-side session, SPEC §10) and the short-lived
single sign-on state. One place decides their attributes."""

from __future__ import annotations

import ipaddress

from aiohttp import web

SESSION_COOKIE = "keygate_session"
SSO_COOKIE = "keygate_sso"
SSO_COOKIE_PATH = "/console/sso/"
SSO_COOKIE_MAX_AGE = 600  # an unfinished sign-in at the provider is abandoned after this


def loopback(request: web.BaseRequest) -> bool:
    """The request reached us on a loopback address (dev): Secure cookies would not stick
    over plain http there."""
    host = host_name(request.host or "")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:8081` -> `::1`."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def secure_cookies(request: web.BaseRequest, public_url: str | None) -> bool:
    """`Secure` unless the console is served over plain http on loopback (SPEC §10)."""
    if public_url is not None:
        return public_url.startswith("https://") or not loopback(request)
    return request.secure or not loopback(request)


def set_session_cookie(
    response: web.StreamResponse, session_id: str, *, secure: bool, max_age: int
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        path="/",
        max_age=max_age,
        httponly=True,
        samesite="Lax",
        secure=secure,
    )


def clear_session_cookie(response: web.StreamResponse, *, secure: bool) -> None:
    response.del_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="Lax")


def set_sso_cookie(response: web.StreamResponse, value: str, *, secure: bool) -> None:
    response.set_cookie(
        SSO_COOKIE,
        value,
        path=SSO_COOKIE_PATH,
        max_age=SSO_COOKIE_MAX_AGE,
        httponly=True,
        samesite="Lax",  # sent on the provider's top-level redirect back to the callback
        secure=secure,
    )


def clear_sso_cookie(response: web.StreamResponse, *, secure: bool) -> None:
    response.del_cookie(SSO_COOKIE, path=SSO_COOKIE_PATH, secure=secure, httponly=True)
