"""The one place where a refusal becomes an HTTP response."""

from __future__ import annotations

import json

from aiohttp import web

from gateway.auth.errors import Refusal

SERVER_NAME = "keygate"
JSON_TYPE = "application/json; charset=utf-8"


def refusal_parts(refusal: Refusal, request_id: str) -> tuple[dict[str, str], bytes]:
    """A refusal's headers (Content-Type included) and JSON body, for any writer."""
    body = json.dumps(
        {"error": {"code": refusal.code, "message": refusal.message, "request_id": request_id}}
    )
    headers = {
        "Content-Type": JSON_TYPE,
        "Cache-Control": "no-store",
        "X-Request-Id": request_id,
        "Server": SERVER_NAME,
        **refusal.headers(),
    }
    return headers, body.encode()


def refusal_response(refusal: Refusal, request_id: str) -> web.Response:
    headers, body = refusal_parts(refusal, request_id)
    return web.Response(status=refusal.status, body=body, headers=headers)
