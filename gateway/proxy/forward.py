"""Forwarding one HTTP request upstream and streaming the response back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.observability import metrics
from gateway.proxy.errors import BodyTooLarge, UpstreamTimeout, UpstreamUnavailable
from gateway.proxy.headers import downstream_response_headers
from gateway.proxy.upstreams import Upstream, send_headers, sent_headers

CHUNK = 64 * 1024


class _ForwardedResponse(web.StreamResponse):
    # Hold the serialized headers until the first body write (as web.Response does), so
    # a body that arrived with the upstream's headers leaves in the same send() call.
    # forward_http writes straight after prepare(), so headers are never delayed.
    _send_headers_immediately = False


class _Limited:
    """Streams the request body, stopping once it exceeds `limit` bytes."""

    def __init__(self, request: web.BaseRequest, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.request.content.iter_chunked(CHUNK):
            seen += len(chunk)
            if seen > self.limit:
                self.exceeded = True
                raise BodyTooLarge()
            yield chunk


def _body(request: web.BaseRequest, max_body: int | None) -> object:
    if not request.body_exists:
        return None
    if max_body is None:
        return request.content  # streamed by aiohttp, never buffered whole
    length = request.content_length
    if length is not None and length > max_body:
        raise BodyTooLarge()
    return _Limited(request, max_body) if length is None else request.content


async def forward_http(
    request: web.BaseRequest,
    upstream: Upstream,
    path: str,
    query: str,
    headers: CIMultiDict[str],
    max_body: int | None,
    request_id: str,
    gateway_headers: tuple[tuple[str, str], ...] = (),
) -> web.StreamResponse:
    """Send the request upstream and stream the answer back; map failures to refusals.

    `gateway_headers` (the RateLimit-* of a limited request) replace the upstream's own.
    """
    body = _body(request, max_body)
    started = time.perf_counter()
    handed_over = send_headers(headers)
    try:
        async with upstream.session.request(
            request.method, upstream.url(path, query), data=body,
            allow_redirects=False, compress=None, chunked=None,
        ) as reply:
            metrics.UPSTREAM_DURATION.observe(upstream.config.name, time.perf_counter() - started)
            response_headers = downstream_response_headers(reply.headers, request_id)
            for name, value in gateway_headers:
                response_headers[name] = value
            response = _ForwardedResponse(
                status=reply.status, reason=reply.reason, headers=response_headers
            )
            await response.prepare(request)
            try:
                # What has already arrived (often the whole body) goes out with the
                # headers; b"" sends the headers alone.
                await response.write(reply.content.read_nowait())
                async for chunk in reply.content.iter_any():
                    await response.write(chunk)
            except (TimeoutError, aiohttp.ClientError):
                # Too late for a status: cut the connection so the client sees truncation.
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write_eof()
            return response
    except BodyTooLarge:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout() from None
    except aiohttp.ClientConnectorError:
        raise UpstreamUnavailable() from None
    except aiohttp.ClientError:
        if isinstance(body, _Limited) and body.exceeded:
            raise BodyTooLarge() from None
        raise UpstreamUnavailable() from None
    finally:
        sent_headers(handed_over)
