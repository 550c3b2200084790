"""The one place where a refusal becomes an HTTP response."""

from __future__ import annotations

import json

from aiohttp import web

from gateway.auth.errors import Refusal

SERVER_NAME = "keygate"


def refusal_response(refusal: Refusal, request_id: str) -> web.Response:
    body = json.dumps(
        {"error": {"code": refusal.code, "message": refusal.message, "request_id": request_id}}
    )
    headers = {
        "Cache-Control": "no-store",
        "X-Request-Id": request_id,
        "Server": SERVER_NAME,
        **refusal.headers(),
    }
    return web.Response(
        status=refusal.status, text=body, content_type="application/json", headers=headers
    )
