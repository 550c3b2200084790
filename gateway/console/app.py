"""The console sub-application: pages, static files, and the middleware they share.

Mounted at /console on the admin listener (same origin as /admin/v1, whose API the
pages' script calls for every change). Templates and assets ship inside the package:
no CDN, no build step.
"""

from __future__ import annotations

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.config import Config
from gateway.console import auth_pages, key_pages, org_pages, views
from gateway.console.render import ASSETS, CONFIG, KEYS, STATIC_DIR, asset_versions, error_pages
from gateway.console.security import add_security_headers
from gateway.console.session import PEOPLE, PUBLIC_URL, session_middleware
from gateway.keys.service import KeyService
from gateway.people.service import PeopleService


def console_app(
    people: PeopleService,
    keys: KeyService,
    config: Config,
    oidc_routes: list[web.RouteDef] | None = None,
) -> web.Application:
    """The /console sub-app; `oidc_routes` (`/sso/start`, `/sso/callback`) when single
    sign-on is configured."""
    # No client_max_size here: a sub-app's is not used (the main app reads the body);
    # the console's forms are bounded where they are read (gateway/console/forms.py).
    app = web.Application(middlewares=[error_pages, session_middleware])
    app[PEOPLE] = people
    app[KEYS] = keys
    app[CONFIG] = config
    app[PUBLIC_URL] = config.console.public_url or ""
    app[ASSETS] = asset_versions()
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("gateway.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        default_helpers=False,
    )
    env.filters.update(
        relative=views.relative,
        exact=views.exact,
        iso=views.iso,
        short_date=views.short_date,
        trace_id=views.trace_id,
        person=views.person,
    )
    app.on_response_prepare.append(add_security_headers)
    app.add_routes(
        [
            web.get("/", auth_pages.home),
            web.get("/sign-in", auth_pages.sign_in_page),
            web.post("/sign-in", auth_pages.sign_in),
            web.post("/sign-out", auth_pages.sign_out),
            web.get("/invite/{token}", auth_pages.invite_page),
            web.post("/invite/{token}", auth_pages.accept_invite),
            web.get("/orgs/{org}/keys", key_pages.keys_list),
            web.get("/orgs/{org}/keys/new", key_pages.key_new),
            web.get("/orgs/{org}/keys/{key_id}", key_pages.key_detail),
            web.get("/orgs/{org}/audit", org_pages.audit_log),
            web.get("/orgs/{org}/members", org_pages.members),
            web.static("/static", STATIC_DIR, append_version=False),
            *(oidc_routes or []),
        ]
    )
    return app
