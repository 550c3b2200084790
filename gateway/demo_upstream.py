"""A small upstream that reports what it received: used by `keygate dev` and the tests.

  ANY  /<anything>          JSON: method, path (raw target), query, headers, body size,
                            SHA-256 and (when under 64 KiB, as text) the body itself
  GET  /_demo/slow?seconds=S  answers after S seconds
  GET  /_demo/stream?bytes=N  streams N bytes (chunked), deterministic content
  GET  /_demo/redirect       302 to /elsewhere (the gateway must not follow it)
  GET  /_demo/gzip           a gzip-encoded body with Content-Encoding: gzip
  GET  /_demo/ws (upgrade)   WebSocket echo; text "close:<code>" makes it close with <code>
  GET  /_demo/issuer/jwks.json  the demo issuer's public keys (only when `demo_app` is
                            given them: `keygate dev` does, see gateway.demo_issuer)
Any path with `Upgrade: websocket` is a WebSocket echo.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
from collections.abc import Mapping
from typing import Any

from aiohttp import WSMsgType, web

from gateway.demo_issuer import JWKS_PATH

ECHO_BODY_LIMIT = 64 * 1024


def pattern_bytes(size: int, offset: int = 0) -> bytes:
    """Deterministic content (so both ends can check it) of `size` bytes."""
    block = bytes(range(256))
    start = offset % 256
    data = (block[start:] + block * (size // 256 + 2))[:size]
    return data


async def _echo(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _ws_echo(request)
    digest = hashlib.sha256()
    size = 0
    kept = bytearray()
    async for chunk in request.content.iter_chunked(256 * 1024):
        digest.update(chunk)
        size += len(chunk)
        if len(kept) < ECHO_BODY_LIMIT:
            kept.extend(chunk[: ECHO_BODY_LIMIT - len(kept)])
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path.partition("?")[0],
            "query": request.raw_path.partition("?")[2],
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_size": size,
            "body_sha256": digest.hexdigest(),
            "body": kept.decode("utf-8", "replace") if size <= ECHO_BODY_LIMIT else None,
        }
    )


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "5")))
    return web.json_response({"slept": float(request.query.get("seconds", "5"))})


async def _stream(request: web.Request) -> web.StreamResponse:
    total = int(request.query.get("bytes", "1048576"))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    sent = 0
    while sent < total:
        chunk = pattern_bytes(min(256 * 1024, total - sent), sent)
        await response.write(chunk)
        sent += len(chunk)
    await response.write_eof()
    return response


async def _redirect(_: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/elsewhere"})


async def _gzip(_: web.Request) -> web.Response:
    body = gzip.compress(b"compressed hello " * 100, mtime=0)  # same bytes every time
    headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    return web.Response(body=body, headers=headers)


async def _ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat", "v2.chat"), autoping=True)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            if msg.data.startswith("close:"):
                await ws.close(code=int(msg.data.split(":", 1)[1]), message=b"asked to close")
                break
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def demo_app(jwks: Mapping[str, Any] | None = None) -> web.Application:
    """The echo upstream; with `jwks`, also the demo issuer's key set at JWKS_PATH."""
    app = web.Application(client_max_size=0)
    if jwks is not None:
        document = dict(jwks)

        async def _jwks(_: web.Request) -> web.Response:
            return web.json_response(document, headers={"Cache-Control": "max-age=300"})

        app.router.add_get(JWKS_PATH, _jwks)
    app.router.add_get("/_demo/slow", _slow)
    app.router.add_get("/_demo/stream", _stream)
    app.router.add_get("/_demo/redirect", _redirect)
    app.router.add_get("/_demo/gzip", _gzip)
    app.router.add_get("/_demo/ws", _ws_echo)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Keygate demo upstream (echo)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    web.run_app(demo_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
