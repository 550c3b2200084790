"""The admin API's people endpoints: who am I (`/me`) and an org's members."""

from __future__ import annotations

from aiohttp import web

from gateway.admin import requests as read
from gateway.admin.principals import request_actor
from gateway.admin.telemetry import REQUEST_ID
from gateway.keys.errors import InvalidInput, NotFound
from gateway.keys.models import Actor, rfc3339
from gateway.people.models import invite_url
from gateway.people.service import PeopleService

PEOPLE = web.AppKey("people", PeopleService)
INVITE_ORIGIN = web.AppKey("invite_origin", str)  # console.public_url or http://<listen.admin>


async def _actor(request: web.Request) -> Actor:
    return await request_actor(request, request[REQUEST_ID])


def _people(request: web.Request) -> PeopleService:
    people = request.app.get(PEOPLE)
    if people is None:  # an admin app built without people (library use)
        raise NotFound("the console's people are not enabled on this gateway")
    return people


async def me(request: web.Request) -> web.Response:
    actor = await _actor(request)
    return web.json_response(await _people(request).me(actor))


async def list_members(request: web.Request) -> web.Response:
    actor = await _actor(request)
    members = await _people(request).list_members(actor, request.match_info["org"])
    return web.json_response({"items": [m.to_json() for m in members]})


async def invite_member(request: web.Request) -> web.Response:
    actor = await _actor(request)
    body = await read.json_body(request, {"email": str, "role": str, "name": str})
    for required in ("email", "role"):
        if required not in body:
            raise InvalidInput(f"{required} is required", required)
    invite = await _people(request).invite(
        actor, body["email"], request.match_info["org"], body["role"], name=body.get("name")
    )
    return web.json_response(
        {
            "member": invite.member.to_json(),
            "invite_url": invite_url(request.app[INVITE_ORIGIN], invite.token),
            "expires_at": rfc3339(invite.expires_at),
        },
        status=201,
    )


async def change_role(request: web.Request) -> web.Response:
    actor = await _actor(request)
    body = await read.json_body(request, {"role": str})
    if "role" not in body:
        raise InvalidInput("role is required", "role")
    member = await _people(request).change_role(
        actor, request.match_info["org"], request.match_info["email"], body["role"]
    )
    return web.json_response(member.to_json())


async def remove_member(request: web.Request) -> web.Response:
    actor = await _actor(request)
    await _people(request).remove_member(
        actor, request.match_info["org"], request.match_info["email"]
    )
    return web.Response(status=204)


def member_routes() -> list[web.RouteDef]:
    return [
        web.get("/me", me, allow_head=False),
        web.get("/orgs/{org}/members", list_members, allow_head=False),
        web.post("/orgs/{org}/members", invite_member),
        web.patch("/orgs/{org}/members/{email}", change_role),
        web.delete("/orgs/{org}/members/{email}", remove_member),
    ]
