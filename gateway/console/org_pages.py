"""An org's audit log and members pages.

The audit log is for owners and admins (the key service's rule); the members list for
owners and admins too, and only owners see the invite, role and remove controls (the
people service refuses anyone else through the API as well). Owners and admins can also
revoke a person's user tokens there, when user-token issuers are configured.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.console.key_pages import require_key_role
from gateway.console.render import CONFIG, KEYS, render
from gateway.console.session import PEOPLE, viewer
from gateway.console.views import ACTION_LABELS, ACTIONS
from gateway.people.models import ROLES

AUDIT_PAGE = 50
MAX_FILTER = 200


async def audit_log(request: web.Request) -> web.Response:
    org = request.match_info["org"]
    role = require_key_role(request, org)
    action = request.query.get("action") or None
    if action not in ACTION_LABELS:
        action = None
    key_filter = request.query.get("key", "").strip()[:MAX_FILTER]
    cursor = request.query.get("cursor") or None
    page = await request.app[KEYS].list_audit(
        viewer(request).actor,
        org,
        key_id=key_filter or None,
        action=action,
        limit=AUDIT_PAGE,
        cursor=cursor,
    )
    context: dict[str, Any] = {
        "title": "Audit log",
        "org": org,
        "role": role,
        "section": "audit",
        "entries": page.items,
        "next_cursor": page.next_cursor,
        "paged": cursor is not None,
        "actions": ACTIONS,
        "action_labels": ACTION_LABELS,
        "action": action or "",
        "key_filter": key_filter,
        "filtered": bool(action or key_filter),
    }
    return await render(request, "audit.html", context)


async def members(request: web.Request) -> web.Response:
    org = request.match_info["org"]
    role = require_key_role(request, org)
    who = viewer(request)
    listed = await request.app[PEOPLE].list_members(who.actor, org)
    context: dict[str, Any] = {
        "title": "Members",
        "org": org,
        "role": role,
        "section": "members",
        "members": listed,
        "roles": ROLES,
        "is_owner": role == "owner",
        "me": who.email,
        # Owners and admins may revoke a person's user tokens (SPEC §11) when issuers
        # are trusted; the admin API decides again.
        "issuers": [i.issuer for i in request.app[CONFIG].user_tokens],
    }
    return await render(request, "members.html", context)
