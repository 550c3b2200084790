"""The proxy listener's aiohttp server: §3's and §4's rules hold even where aiohttp acts alone.

This is the one module that reaches past aiohttp's documented web API, and only through
its protocol class (`RequestHandler`), whose constructor and `handle_error` hook have kept
their shape since 3.x began; tests/unit/test_aiohttp_contract.py fails on an aiohttp
where they do not. Two things need it:

- aiohttp answers requests its HTTP parser refuses on its own, with a text body quoting
  the offending request line or header (which may hold an API key) and a `Server` banner
  naming versions. `handle_error` turns those into the gateway's JSON refusals: 431 for
  an over-long line or too many fields, 400 otherwise, and always closes the connection.
- A request head must arrive within `header_timeout`. aiohttp bounds only idle
  keep-alive time, so the protocol arms a timer when a connection opens and when the
  first byte of the next request arrives, and cancels it once a request is handed to the
  handler: a client that sends nothing, or drips a head byte by byte, is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpRequestParser
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.auth.errors import Refusal
from gateway.config import ServerConfig
from gateway.observability import metrics
from gateway.observability.request_ids import request_id
from gateway.proxy.errors import BadRequest, HeadersTooLarge, InternalError
from gateway.proxy.responses import refusal_response

log = logging.getLogger("keygate")
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def parser_refusal(status: int, exc: BaseException | None) -> Refusal:
    """The refusal for something aiohttp's parser (or its handler wrapper) rejected."""
    if status >= 500:
        return InternalError()
    if isinstance(exc, LineTooLong):
        return HeadersTooLarge()
    # aiohttp 3.12+ counts header fields itself; that refusal has no class of its own.
    if isinstance(exc, BadHttpMessage) and "too many headers" in exc.message.lower():
        return HeadersTooLarge()
    return BadRequest()


def parse_request_line(method: str, target: str, server: ServerConfig) -> tuple[str, str]:
    """(method, raw target) as this listener's HTTP parser reads `METHOD TARGET HTTP/1.1`,
    or the refusal the proxy answers that request line with (`keygate routes test`).

    The parser is aiohttp's own, with the listener's limits: methods are case-sensitive
    tokens it knows, targets are ASCII without spaces or controls, over-long lines are 431.
    """
    if any(c.isspace() or not c.isprintable() for c in method + target):
        raise BadRequest()  # more than one request line's worth, never one target
    loop = asyncio.new_event_loop()  # the parser's payload streams want one; none is run
    try:
        parser = HttpRequestParser(
            BaseProtocol(loop),
            loop,
            2**16,
            max_line_size=server.max_header_field,
            max_field_size=server.max_header_field,
            max_headers=server.max_header_count,
        )
        head = f"{method} {target} HTTP/1.1\r\nHost: keygate\r\n\r\n".encode()
        messages, _upgraded, _tail = parser.feed_data(head)
    except HttpProcessingError as exc:
        raise parser_refusal(400, exc) from None
    finally:
        loop.close()
    message = messages[0][0]
    return message.method, message.path


class _ProxyRequestHandler(RequestHandler):
    """aiohttp's connection protocol plus a head timeout and the gateway's error bodies."""

    def __init__(self, manager: ProxyServer, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._keygate_header_timeout = header_timeout
        self._keygate_head_timer: asyncio.TimerHandle | None = None
        self._keygate_handling = False
        # When the head now being received began (loop time), None while none is.
        self._keygate_head_since: float | None = None

    # -- the head timeout (asyncio.Protocol methods) --------------------------------
    # One timer per connection at most, re-armed only when it fires: arming and
    # cancelling a timer for every request would cost more than the check itself.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_started()  # a connection that never sends a byte is closed too

    def data_received(self, data: bytes) -> None:
        if not self._keygate_handling and self._keygate_head_since is None and data:
            self._head_started()  # the first byte of the next head starts its clock
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._keygate_head_timer is not None:
            self._keygate_head_timer.cancel()
            self._keygate_head_timer = None
        super().connection_lost(exc)

    def request_started(self) -> None:
        self._keygate_handling = True
        self._keygate_head_since = None  # the head is complete; the timer lets it be

    def request_finished(self) -> None:
        self._keygate_handling = False  # idle now: keepalive_timeout bounds the wait

    def _head_started(self) -> None:
        if self._keygate_header_timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        self._keygate_head_since = loop.time()
        if self._keygate_head_timer is None:
            self._keygate_head_timer = loop.call_later(
                self._keygate_header_timeout, self._head_timer_fired
            )

    def _head_timer_fired(self) -> None:
        self._keygate_head_timer = None
        since = self._keygate_head_since
        if since is None or self._keygate_handling:
            return  # no head in progress: nothing to time until the next one starts
        loop = asyncio.get_running_loop()
        left = since + self._keygate_header_timeout - loop.time()
        if left <= 0:
            self.force_close()
        else:  # a later head than the one the timer was armed for: its own deadline
            self._keygate_head_timer = loop.call_later(left, self._head_timer_fired)

    # -- aiohttp's own answers --------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Like aiohttp's, minus the logging of raw request data and the echoed input."""
        refusal = parser_refusal(status, exc)
        if status >= 500:
            # Only reached when the handler itself failed outside its own guard.
            log.error("unhandled error in the proxy listener", exc_info=exc)
        metrics.REQUESTS.add(("none", "other", str(refusal.status), refusal.code))
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        response = refusal_response(refusal, request_id(None))
        response.force_close()
        return response


class ProxyServer(web.Server):
    """web.Server whose connections use the protocol above, configured from `server`."""

    def __init__(self, handler: Handler, server: ServerConfig) -> None:
        super().__init__(self._handle, handler_cancellation=True)
        self._keygate_handler = handler
        self._keygate_loop = asyncio.get_running_loop()
        # Our own copy: aiohttp's Server keeps its kwargs in a private attribute.
        self._keygate_protocol_kwargs: dict[str, Any] = {
            "keepalive_timeout": server.keepalive_timeout,
            "max_line_size": server.max_header_field,
            "max_field_size": server.max_header_field,
            "max_headers": server.max_header_count,
            "auto_decompress": False,  # request bodies are forwarded as received
            # After an answer, the unread rest of a body is drained for at most this long.
            "lingering_time": server.body_idle_timeout,
            "access_log": None,  # the gateway writes its own access log
        }
        self._keygate_header_timeout = server.header_timeout

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        protocol = request.protocol
        if isinstance(protocol, _ProxyRequestHandler):
            protocol.request_started()
        try:
            return await self._keygate_handler(request)
        finally:
            if isinstance(protocol, _ProxyRequestHandler):
                protocol.request_finished()

    def __call__(self) -> RequestHandler:
        return _ProxyRequestHandler(
            self,
            loop=self._keygate_loop,
            header_timeout=self._keygate_header_timeout,
            **self._keygate_protocol_kwargs,
        )
