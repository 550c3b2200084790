"""The admin HTTP API under /admin/v1: thin handlers over the key and people services."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.admin import requests as read
from gateway.admin.members import INVITE_ORIGIN, PEOPLE, member_routes
from gateway.admin.openapi import openapi_document
from gateway.admin.principals import AUTH, AdminAuth, request_actor
from gateway.admin.telemetry import ERROR_CODE, REQUEST_ID, admin_telemetry
from gateway.auth.errors import Refusal
from gateway.keys.errors import InvalidInput, ServiceError
from gateway.keys.models import Actor, utcnow
from gateway.keys.service import KEEP, KeyService
from gateway.observability.access_log import AccessLog
from gateway.observability.request_ids import request_id as make_request_id
from gateway.people.service import PeopleService
from gateway.tokens.service import TokenService

PREFIX = "/admin/v1"
SERVICE = web.AppKey("service", KeyService)
TOKENS = web.AppKey("tokens", TokenService)
__all__ = ["AUTH", "PREFIX", "SERVICE", "admin_api", "error_response"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if field is not None:
        error["field"] = field
    response = web.Response(
        status=status,
        text=json.dumps({"error": error}),
        content_type="application/json",
        headers={"Cache-Control": "no-store", "X-Request-Id": request_id, **(headers or {})},
    )
    response[ERROR_CODE] = code  # the access log's outcome
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One place turning every failure into the JSON error shape the proxy uses too."""
    rid = make_request_id(request.headers.get("X-Request-Id"))
    request[REQUEST_ID] = rid
    try:
        response = await handler(request)
    except ServiceError as exc:
        return error_response(exc.status, exc.code, exc.message, rid, exc.field)
    except Refusal as refusal:
        return error_response(
            refusal.status, refusal.code, refusal.message, rid, headers=refusal.headers()
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "invalid_request")
        return error_response(exc.status, code, exc.reason, rid)
    response.headers["X-Request-Id"] = rid
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _hide_banner(_: web.Request, response: web.StreamResponse) -> None:
    """No `Server: Python/… aiohttp/…` on admin responses either (SPEC §3)."""
    response.headers["Server"] = "keygate"


async def _actor(request: web.Request) -> Actor:
    return await request_actor(request, request[REQUEST_ID])


# A change that is durable but did not go as usual (a cache tier missed it) says so here,
# one header per warning: the body stays the documented object.
WARNING_HEADER = "Keygate-Warning"


def _json(data: Any, status: int = 200, warnings: tuple[str, ...] = ()) -> web.Response:
    reply = web.json_response(data, status=status)
    for warning in warnings:
        reply.headers.add(WARNING_HEADER, warning)
    return reply


async def create_org(request: web.Request) -> web.Response:
    actor = await _actor(request)
    body = await read.json_body(request, {"slug": str, "name": str})
    if "slug" not in body:
        raise InvalidInput("slug is required", "slug")
    org = await request.app[SERVICE].create_org(actor, body["slug"], body.get("name"))
    return _json(org.to_json(), 201)


async def list_orgs(request: web.Request) -> web.Response:
    actor = await _actor(request)
    orgs = await request.app[SERVICE].list_orgs(actor)
    return _json({"items": [o.to_json() for o in orgs]})


async def create_key(request: web.Request) -> web.Response:
    actor = await _actor(request)
    body = await read.json_body(
        request,
        {
            "name": str,
            "scopes": list,
            "env": str,
            "expires_at": str,
            "expires_in": str,
            "metadata": dict,
            "rate_limit": (dict, read.NULL),
        },
    )
    for required in ("name", "scopes"):
        if required not in body:
            raise InvalidInput(f"{required} is required", required)
    created = await request.app[SERVICE].create_key(
        actor,
        request.match_info["org"],
        body["name"],
        read.string_list(body, "scopes") or [],
        env=body.get("env", "live"),
        expires_in=read.duration(body, "expires_in"),
        expires_at=read.timestamp(body, "expires_at"),
        metadata=body.get("metadata"),
        rate_limit=body.get("rate_limit"),
    )
    return _json({"key": created.key.to_json(utcnow()), "secret": created.secret}, 201)


async def list_keys(request: web.Request) -> web.Response:
    actor = await _actor(request)
    page = await request.app[SERVICE].list_keys(
        actor,
        request.match_info["org"],
        status=read.query_text(request, "status") or "all",
        search=read.query_text(request, "q"),
        limit=read.query_limit(request),
        cursor=read.query_text(request, "cursor"),
    )
    now = utcnow()
    return _json({"items": [k.to_json(now) for k in page.items], "next_cursor": page.next_cursor})


async def show_key(request: web.Request) -> web.Response:
    actor = await _actor(request)
    key = await request.app[SERVICE].get_key(
        actor, request.match_info["key_id"], org=request.match_info["org"]
    )
    return _json(key.to_json(utcnow()))


async def update_key(request: web.Request) -> web.Response:
    actor = await _actor(request)
    body = await read.json_body(
        request, {"name": str, "scopes": list, "rate_limit": (dict, read.NULL)}
    )
    updated = await request.app[SERVICE].update_key(
        actor,
        request.match_info["key_id"],
        name=body.get("name"),
        scopes=read.string_list(body, "scopes"),
        org=request.match_info["org"],
        rate_limit=body.get("rate_limit", KEEP),  # null removes it
    )
    return _json(updated.key.to_json(utcnow()), warnings=updated.warnings)


async def revoke_key(request: web.Request) -> web.Response:
    actor = await _actor(request)
    body = await read.json_body(request, {"reason": str})
    revoked = await request.app[SERVICE].revoke_key(
        actor,
        request.match_info["key_id"],
        reason=body.get("reason"),
        org=request.match_info["org"],
    )
    # 200 too when it was already revoked
    return _json(revoked.key.to_json(utcnow()), warnings=revoked.warnings)


async def roll_key(request: web.Request) -> web.Response:
    actor = await _actor(request)
    body = await read.json_body(request, {"grace": str, "expires_in": str, "expires_at": str})
    grace = read.duration(body, "grace")
    rolled = await request.app[SERVICE].roll_key(
        actor,
        request.match_info["key_id"],
        grace=86400.0 if grace is None else grace,
        expires_in=read.duration(body, "expires_in"),
        expires_at=read.timestamp(body, "expires_at"),
        org=request.match_info["org"],
    )
    now = utcnow()
    return _json(
        {
            "key": rolled.key.to_json(now),
            "secret": rolled.secret,
            "previous": rolled.previous.to_json(now),
        },
        201,
        rolled.warnings,
    )


async def list_audit(request: web.Request) -> web.Response:
    actor = await _actor(request)
    page = await request.app[SERVICE].list_audit(
        actor,
        request.match_info["org"],
        key_id=read.query_text(request, "key_id"),
        action=read.query_text(request, "action"),
        limit=read.query_limit(request),
        cursor=read.query_text(request, "cursor"),
    )
    return _json({"items": [e.to_json() for e in page.items], "next_cursor": page.next_cursor})


async def revoke_user_tokens(request: web.Request) -> web.Response:
    actor = await _actor(request)
    body = await read.json_body(request, {"subject": str, "issuer": str})
    if "subject" not in body:
        raise InvalidInput("subject is required", "subject")
    revoked = await request.app[TOKENS].revoke(
        actor, request.match_info["org"], body["subject"], body.get("issuer")
    )
    return _json(revoked.to_json(), warnings=revoked.warnings)


async def openapi(_: web.Request) -> web.Response:
    return _json(openapi_document())


def admin_api(
    service: KeyService,
    auth: AdminAuth,
    access_log: AccessLog | None = None,
    *,
    people: PeopleService | None = None,
    invite_origin: str = "",
    tokens: TokenService | None = None,
) -> web.Application:
    """The /admin/v1 sub-application; each request counted and logged to `access_log`.

    `people` serves /me and the members endpoints (invite links start with
    `invite_origin`); without it they answer 404. `tokens` revokes user tokens (without
    it: on the key service's database, no issuer may be named and nothing is published
    on Redis — gateways still hear it through PostgreSQL)."""
    telemetry = admin_telemetry(access_log or AccessLog(enabled=False), PREFIX)
    app = web.Application(middlewares=[telemetry, errors_middleware], client_max_size=read.MAX_BODY)
    app[SERVICE] = service
    if tokens is None and service is not None:
        tokens = TokenService(service.db, ())
    if tokens is not None:
        app[TOKENS] = tokens
    app[AUTH] = auth
    if people is not None:
        app[PEOPLE] = people
    app[INVITE_ORIGIN] = invite_origin
    app.on_response_prepare.append(_hide_banner)
    app.add_routes(
        [
            web.get("/openapi.json", openapi),
            web.post("/orgs", create_org),
            web.get("/orgs", list_orgs, allow_head=False),
            web.post("/orgs/{org}/keys", create_key),
            web.get("/orgs/{org}/keys", list_keys, allow_head=False),
            web.get("/orgs/{org}/keys/{key_id}", show_key, allow_head=False),
            web.patch("/orgs/{org}/keys/{key_id}", update_key),
            web.post("/orgs/{org}/keys/{key_id}/revoke", revoke_key),
            web.post("/orgs/{org}/keys/{key_id}/roll", roll_key),
            web.get("/orgs/{org}/audit", list_audit, allow_head=False),
            web.post("/orgs/{org}/user-tokens/revoke", revoke_user_tokens),
            *member_routes(),
        ]
    )
    return app
