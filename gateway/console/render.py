"""Rendering console pages: the context every page shares, and errors as pages.

A service error raised while building a page becomes a page in words (not found, no
access, what was wrong), never raw JSON or a stack trace.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from gateway.config import Config
from gateway.console.session import optional_viewer
from gateway.keys.errors import Forbidden, NotFound, ServiceError
from gateway.keys.models import utcnow
from gateway.keys.service import KeyService

log = logging.getLogger("keygate.console")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC_DIR = Path(__file__).parent / "static"
KEYS = web.AppKey("console_keys", KeyService)
CONFIG = web.AppKey("console_config", Config)
ASSETS = web.AppKey("console_assets", dict[str, str])
KEY_ROLES = ("owner", "admin")


@dataclass(frozen=True)
class OrgChoice:
    """An org in the switcher: its slug, name and the person's role there."""

    slug: str
    name: str
    role: str

    @property
    def sees_keys(self) -> bool:
        return self.role in KEY_ROLES


def asset_versions() -> dict[str, str]:
    """A short content hash per static file, appended to its URL so a new release is
    never served from a stale browser cache."""
    versions = {}
    for path in sorted(STATIC_DIR.iterdir()):
        if path.is_file():
            versions[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    return versions


async def org_choices(request: web.Request) -> list[OrgChoice]:
    """The orgs the signed-in person has a role in, by name."""
    who = optional_viewer(request)
    if who is None:
        return []
    orgs = await request.app[KEYS].list_orgs(who.actor)
    return [OrgChoice(o.slug, o.name, who.role_in(o.slug) or "member") for o in orgs]


async def render(
    request: web.Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    """A page, with what the layout needs: the person, their orgs, the CSRF token."""
    who = optional_viewer(request)
    versions = request.app[ASSETS]
    config = request.app[CONFIG]
    base: dict[str, Any] = {
        "viewer": who,
        "csrf_token": who.csrf_token if who else "",
        "orgs": await org_choices(request) if who else [],
        "now": utcnow(),
        "sso_label": config.console.oidc.label if config.console.oidc else None,
        "static": lambda name: f"/console/static/{name}?v={versions.get(name, '0')}",
    }
    base.update(context or {})
    return aiohttp_jinja2.render_template(template, request, base, status=status)


async def not_found(request: web.Request, message: str | None = None) -> web.Response:
    return await render(request, "not_found.html", {"message": message}, status=404)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Service errors and unknown pages as pages in words."""
    try:
        return await handler(request)
    except NotFound:
        # "Unknown org" and "unknown key" alike: the same page whether it exists elsewhere.
        return await not_found(request)
    except Forbidden as exc:
        org = request.match_info.get("org", "")
        return await render(
            request,
            "no_access.html",
            {"org": org, "role": _role(request, org), "message": exc.message},
            status=403,
        )
    except ServiceError as exc:
        return await render(
            request,
            "error.html",
            {"message": exc.message, "title": "Something is wrong"},
            status=exc.status,
        )
    except web.HTTPNotFound:
        return await not_found(request)
    except web.HTTPMethodNotAllowed:
        return await render(
            request,
            "error.html",
            {"title": "Not available", "message": "This page cannot be used that way."},
            status=405,
        )
    except web.HTTPException:
        raise  # redirects
    except Exception:
        # The route's template, not the path: an invite link's path is its secret.
        resource = request.match_info.route.resource
        where = resource.canonical if resource is not None else "(no route)"
        log.exception("console page %s %s failed", request.method, where)
        return web.Response(
            status=500,
            text="Something went wrong on our side. Try again in a moment.",
            content_type="text/plain",
        )


def _role(request: web.Request, org: str) -> str | None:
    who = optional_viewer(request)
    return None if who is None else who.role_in(org)
