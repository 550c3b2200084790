"""The console's browser-facing defences: security headers on every answer, and the
same-origin check of its own form posts (SPEC §10).

The pages carry no inline script or style at all, so the policy can forbid both.
"""

from __future__ import annotations

from aiohttp import web

from gateway.people.credentials import same_token

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
STATIC_PREFIX = "/console/static/"
# Static files are named by a content hash in their URL (?v=), so a day is safe.
STATIC_CACHE = "public, max-age=86400"


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every console answer, pages, redirects, errors and static files alike."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if request.path.startswith(STATIC_PREFIX) and response.status == 200:
        response.headers["Cache-Control"] = STATIC_CACHE
    else:
        # Pages show keys, members and audit entries: never kept by a browser or proxy.
        response.headers["Cache-Control"] = "no-store"


def own_origin(request: web.Request) -> str:
    """This listener's origin as the request reached it."""
    return f"{request.scheme}://{request.host}"


def same_origin(request: web.Request, public_url: str | None) -> bool:
    """The form post came from a page of this console: its `Origin` names our own origin
    (or console.public_url behind a TLS-terminating proxy). Browsers send `Origin` on
    every POST, so a missing one is refused too."""
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return False
    return origin in (own_origin(request), public_url)


def csrf_ok(sent: object, expected: str) -> bool:
    """The hidden form field equals the session's CSRF token (constant time)."""
    return isinstance(sent, str) and bool(sent) and same_token(sent, expected)
