"""Settings → API keys: the list, the create form and a key's page.

Reads call the key service with the person's Actor, so the rules are the admin API's;
changes (create, roll, revoke) are made by the page's script through /admin/v1.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.console.render import CONFIG, KEYS, render
from gateway.console.session import viewer
from gateway.console.views import ACTION_LABELS, EXPIRY_PRESETS, GRACE_PRESETS, RATE_WINDOWS
from gateway.keys.errors import Forbidden, NotFound
from gateway.keys.models import AuditEntry, utcnow

PAGE_SIZE = 25
MAX_QUERY = 200
STATUS_FILTERS = (
    ("all", "All"),
    ("active", "Active"),
    ("expired", "Expired"),
    ("revoked", "Revoked"),
)


def require_key_role(request: web.Request, org: str) -> str:
    """The person's role in `org` when it lets them see keys; the service decides again."""
    role = viewer(request).role_in(org)
    if role is None:
        raise NotFound(f"unknown org {org!r}", "org")
    if role not in ("owner", "admin"):
        raise Forbidden(f"your role in {org} is {role}")
    return role


async def keys_list(request: web.Request) -> web.Response:
    org = request.match_info["org"]
    role = require_key_role(request, org)
    actor = viewer(request).actor
    service = request.app[KEYS]
    status = request.query.get("status", "all")
    if status not in dict(STATUS_FILTERS):
        status = "all"
    query = request.query.get("q", "").strip()[:MAX_QUERY]
    cursor = request.query.get("cursor") or None
    page = await service.list_keys(
        actor, org, status=status, search=query or None, limit=PAGE_SIZE, cursor=cursor
    )
    items, next_cursor = page.items, page.next_cursor
    context: dict[str, Any] = {
        "title": "API keys",
        "org": org,
        "role": role,
        "section": "keys",
        "keys": items,
        "status": status,
        "statuses": STATUS_FILTERS,
        "query": query,
        "next_cursor": next_cursor,
        "paged": cursor is not None,
        "filtered": bool(query) or status != "all",
    }
    return await render(request, "keys.html", context)


async def key_new(request: web.Request) -> web.Response:
    org = request.match_info["org"]
    role = require_key_role(request, org)
    config = request.app[CONFIG]
    catalogue = config.scopes
    scopes = sorted(catalogue.descriptions.items()) if catalogue is not None else None
    context: dict[str, Any] = {
        "title": "Create an API key",
        "org": org,
        "role": role,
        "section": "keys",
        "scopes": scopes,
        "envs": list(config.keys.prefixes),
        "expiry_presets": EXPIRY_PRESETS,
        "rate_windows": RATE_WINDOWS,
        "today": utcnow().date().isoformat(),
    }
    return await render(request, "key_new.html", context)


async def key_detail(request: web.Request) -> web.Response:
    org = request.match_info["org"]
    role = require_key_role(request, org)
    actor = viewer(request).actor
    service = request.app[KEYS]
    key = await service.get_key(actor, request.match_info["key_id"], org=org)
    history = await service.list_audit(actor, org, key_id=key.id, limit=50)
    entries: list[AuditEntry] = history.items
    context: dict[str, Any] = {
        "title": key.name,
        "org": org,
        "role": role,
        "section": "keys",
        "key": key,
        "status": key.status(utcnow()),
        "history": entries,
        "replaced_by": _replaced_by(entries),
        "grace_presets": GRACE_PRESETS,
        "action_labels": ACTION_LABELS,
        "descriptions": _descriptions(request),
    }
    return await render(request, "key_detail.html", context)


def _descriptions(request: web.Request) -> dict[str, str]:
    catalogue = request.app[CONFIG].scopes
    return {} if catalogue is None else dict(catalogue.descriptions)


def _replaced_by(entries: list[AuditEntry]) -> str | None:
    """The id of the key that replaced this one when it was rolled."""
    for entry in entries:
        if entry.action == "key.roll":
            new_id = entry.details.get("new_key_id")
            if isinstance(new_id, str):
                return new_id
    return None
