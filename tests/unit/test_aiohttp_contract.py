"""The aiohttp surface gateway/proxy/listener.py relies on beyond the documented web API.

The listener subclasses aiohttp's connection protocol (RequestHandler): it passes keyword
arguments to its constructor, overrides `handle_error` and three asyncio.Protocol
methods, and relies on web.Server building each connection's protocol by calling the
server object. These tests fail on an aiohttp release where any of that changed, instead
of letting the gateway fail on its first connection.
"""

from __future__ import annotations

import asyncio
import inspect

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.config import ServerConfig
from gateway.proxy.listener import ProxyServer, _ProxyRequestHandler


async def _ok(_: web.BaseRequest) -> web.StreamResponse:
    return web.Response(text="ok")


async def test_request_handler_accepts_every_keyword_the_listener_passes() -> None:
    server = ProxyServer(_ok, ServerConfig())
    parameters = inspect.signature(RequestHandler.__init__).parameters
    for name in (*server._keygate_protocol_kwargs, "loop"):
        assert name in parameters, f"RequestHandler no longer takes {name!r}"
    protocol = server()
    assert isinstance(protocol, _ProxyRequestHandler)
    assert protocol.keepalive_timeout == ServerConfig().keepalive_timeout


def test_handle_error_signature_is_unchanged() -> None:
    ours = list(inspect.signature(_ProxyRequestHandler.handle_error).parameters)
    theirs = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert theirs == ours == ["self", "request", "status", "exc", "message"]


def test_protocol_methods_exist_on_request_handler() -> None:
    for name in ("connection_made", "data_received", "connection_lost", "force_close"):
        assert callable(getattr(RequestHandler, name))
    assert issubclass(LineTooLong, BadHttpMessage)


async def test_web_server_builds_its_protocol_by_being_called() -> None:
    server = ProxyServer(_ok, ServerConfig(header_timeout=5))
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
        assert reply.startswith(b"HTTP/1.1 200")
        assert server.connections == [] or all(
            isinstance(c, _ProxyRequestHandler) for c in server.connections
        )
    finally:
        listener.close()
        await listener.wait_closed()
        await server.shutdown(1)
