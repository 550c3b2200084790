"""The one place where a refusal becomes an HTTP response."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

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


class _ProxyRequest(web.BaseRequest):
    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        # Runs for every response of the listener, including aiohttp's own replies to
        # requests its parser refuses, which would otherwise name Python and aiohttp.
        response.headers["Server"] = SERVER_NAME


def proxy_request(
    message: RawRequestMessage,
    payload: StreamReader,
    protocol: RequestHandler,
    writer: AbstractStreamWriter,
    task: asyncio.Task[None],
) -> web.BaseRequest:
    """`request_factory` for the proxy's web.Server: no version banner on any response."""
    return _ProxyRequest(message, payload, protocol, writer, task, task.get_loop())
