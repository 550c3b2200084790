"""The proxy listener's aiohttp server: §3's rules hold even where aiohttp answers itself.

aiohttp answers requests its HTTP parser refuses (and handler crashes) on its own: with a
`Server` banner naming Python and aiohttp, and a text body quoting the offending request
line or header, which may hold an API key. Here those answers become the gateway's usual
JSON error bodies, and every response of the listener says only `Server: keygate`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from gateway.auth.errors import Refusal
from gateway.observability.request_ids import request_id
from gateway.proxy.responses import SERVER_NAME, refusal_response


class Unparseable(Refusal):
    status = 400
    code = "invalid_request"
    message = "The request is not valid HTTP/1.1."


class InternalError(Refusal):
    status = 500
    code = "internal_error"
    message = "The gateway failed to handle the request."


class _ProxyRequest(web.BaseRequest):
    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        # Runs for every response, WebSocket handshakes and aiohttp's own included.
        response.headers["Server"] = SERVER_NAME


def _make_request(
    message: RawRequestMessage,
    payload: StreamReader,
    protocol: RequestHandler,
    writer: AbstractStreamWriter,
    task: asyncio.Task[None],
) -> web.BaseRequest:
    return _ProxyRequest(message, payload, protocol, writer, task, task.get_loop())


class _ProxyRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Like aiohttp's, minus the logging of raw request data and the echoed input."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        refusal: Refusal = InternalError() if status >= 500 else Unparseable()
        refusal.status = status
        response = refusal_response(refusal, request_id(None))
        response.force_close()
        return response


class ProxyServer(web.Server):
    """web.Server whose connections use the handler above and whose requests hide the banner."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, request_factory=_make_request, **kwargs)

    def __call__(self) -> RequestHandler:
        return _ProxyRequestHandler(self, loop=self._loop, **self._kwargs)
