"""Forwarding one HTTP request upstream and streaming the response back.

The gateway, not the client, frames what the upstream receives: the body goes out as the
exact bytes aiohttp's parser delimited (never decoded), under the Content-Length it
parsed, or chunked when the client sent chunked. An upstream connection on which the
request was not written completely is closed, never returned to the pool: the upstream
would read what follows as the start of the next request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth.errors import Refusal
from gateway.observability import metrics
from gateway.proxy.errors import (
    BadRequest,
    BodyStalled,
    BodyTooLarge,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.proxy.framing import Framing
from gateway.proxy.headers import downstream_response_fields
from gateway.proxy.responses import SERVER_NAME
from gateway.proxy.upstream_client import request_head
from gateway.proxy.upstreams import Upstream


class ReplyContent(Protocol):
    """The reply body as both clients give it (aiohttp's StreamReader, the pool's body)."""

    def read_nowait(self) -> bytes: ...
    def at_eof(self) -> bool: ...
    def iter_any(self) -> AsyncIterator[bytes]: ...


class Reply(Protocol):
    """An upstream's answer as both clients give it."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def headers(self) -> CIMultiDictProxy[str]: ...
    @property
    def content(self) -> ReplyContent: ...
    def close(self) -> None: ...


class ClientWentAway(BadRequest):
    """The client's body ended (or its connection closed) before the declared length."""

    message = "The request body ended before its declared length."


class RequestBody:
    """The client's body as sent upstream: counted on the wire, bounded, and checked whole.

    Each read waits at most `idle_timeout` s. `complete` turns true only once every
    declared byte was handed to the upstream writer; `failure` says why it stopped short.
    """

    def __init__(
        self,
        request: web.BaseRequest,
        framing: Framing,
        max_body: int | None,
        idle_timeout: float,
    ) -> None:
        self.request = request
        self.framing = framing
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.sent = 0
        self.complete = False
        self.failure: BaseException | None = None

    def _fail(self, failure: BaseException) -> BaseException:
        self.failure = failure
        return failure

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.sent:
            # A retry on a fresh connection (aiohttp retries idempotent requests whose
            # pooled connection failed) cannot replay what was already read.
            raise self._fail(UpstreamUnavailable())
        content = self.request.content
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    chunk = await content.readany()
            except TimeoutError:
                raise self._fail(BodyStalled()) from None
            except (ConnectionError, aiohttp.ClientPayloadError, web.RequestPayloadError):
                raise self._fail(ClientWentAway()) from None
            if not chunk:
                break
            self.sent += len(chunk)
            if self.max_body is not None and self.sent > self.max_body:
                raise self._fail(BodyTooLarge())
            yield chunk
        if self.framing.length is not None and self.sent != self.framing.length:
            raise self._fail(ClientWentAway())  # EOF before the declared length
        self.complete = True


def check_declared_size(framing: Framing, max_body: int | None) -> None:
    """413 before reading anything when the declared length is already over the limit."""
    if max_body is not None and framing.length is not None and framing.length > max_body:
        raise BodyTooLarge()


async def forward_http(
    request: web.BaseRequest,
    upstream: Upstream,
    path: str,
    query: str,
    headers: CIMultiDict[str],
    framing: Framing,
    max_body: int | None,
    idle_timeout: float,
    request_id: str,
    gateway_headers: tuple[tuple[str, str], ...] = (),
) -> web.StreamResponse:
    """Send the request upstream and stream the answer back; map failures to refusals.

    `gateway_headers` (the RateLimit-* of a limited request) replace the upstream's own.
    """
    check_declared_size(framing, max_body)
    body: RequestBody | None = None
    if framing.length is not None or framing.chunked:
        # Framing never comes from the client's fields (nor survives a Connection token).
        # (Without either, `framing` found no Content-Length or Transfer-Encoding field
        # among these headers: nothing to remove.)
        headers.popall(hdrs.CONTENT_LENGTH, None)
        headers.popall(hdrs.TRANSFER_ENCODING, None)
        if framing.length is not None:
            headers[hdrs.CONTENT_LENGTH] = str(framing.length)
        if framing.has_body:
            body = RequestBody(request, framing, max_body, idle_timeout)
    started = time.perf_counter()
    try:
        async with _exchange(
            request.method, upstream, path, query, headers, framing, body
        ) as reply:
            try:
                metrics.UPSTREAM_DURATION.observe(
                    upstream.config.name, time.perf_counter() - started
                )
                # An upstream that answers before reading the whole body leaves the rest of
                # it unforwarded: this client connection is then not reused either.
                keep_alive = body is None or body.complete
                response_headers = _response_headers(reply, request_id, gateway_headers)
                arrived = reply.content.read_nowait()  # often the whole body came already
                if reply.content.at_eof() and _may_carry_body(request.method, reply.status):
                    # Complete already: one web.Response, whose head and body aiohttp sends
                    # in one write, instead of a head and a body write (a system call
                    # each), and no coroutine to stream it. Its length is the upstream's
                    # Content-Length when it sent one, else these very bytes.
                    whole = web.Response(
                        status=reply.status,
                        reason=reply.reason,
                        body=arrived,
                        headers=response_headers,
                    )
                    if not keep_alive:
                        whole.force_close()
                    return whole
                return await _stream_response(request, reply, response_headers, arrived, keep_alive)
            finally:
                if body is not None and not body.complete:
                    reply.close()  # never back to the pool: the request was cut short
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise _refusal(exc, body) from None


def _exchange(
    method: str,
    upstream: Upstream,
    path: str,
    query: str,
    headers: CIMultiDict[str],
    framing: Framing,
    body: RequestBody | None,
) -> AbstractAsyncContextManager[Reply]:
    """The request sent upstream: by the lean pool when it has no body and is not HEAD
    (whose answer announces a body it does not carry), else by aiohttp's client."""
    if upstream.pool is not None and body is None and method != "HEAD":
        head = request_head(method, upstream.target(path, query), headers.items())
        return upstream.pool.request(method, head)
    return upstream.session.request(
        method,
        upstream.url(path, query),
        headers=headers,
        data=body,
        allow_redirects=False,
        compress=None,
        chunked=True if framing.chunked else None,
    )


def _refusal(exc: BaseException, body: RequestBody | None) -> BaseException:
    """What a failed exchange means for the client: the body's own failure comes first."""
    if body is not None and body.failure is not None:
        return body.failure
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout()
    return UpstreamUnavailable()


def _response_headers(
    reply: Reply,
    request_id: str,
    gateway_headers: tuple[tuple[str, str], ...],
) -> CIMultiDict[str] | list[tuple[str, str]]:
    """The client's response headers. Pairs, not a CIMultiDict, when nothing is replaced:
    web.Response and StreamResponse copy whatever they are given."""
    fields = downstream_response_fields(reply.headers, request_id)
    if not gateway_headers:
        fields.append((hdrs.SERVER, SERVER_NAME))  # the upstream's own Server was dropped
        return fields
    headers = CIMultiDict(fields)
    for name, value in gateway_headers:
        headers[name] = value  # replaces the upstream's field of that name
    headers.add(hdrs.SERVER, SERVER_NAME)
    return headers


async def _stream_response(
    request: web.BaseRequest,
    reply: Reply,
    response_headers: CIMultiDict[str] | list[tuple[str, str]],
    arrived: bytes,
    keep_alive: bool,
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=reply.status, reason=reply.reason, headers=response_headers
    )
    if not keep_alive:
        response.force_close()
    await response.prepare(request)
    try:
        if arrived:
            await response.write(arrived)
        async for chunk in reply.content.iter_any():
            await response.write(chunk)
    except (TimeoutError, aiohttp.ClientError, Refusal):
        # Too late for a status: cut the connection so the client sees truncation.
        _abort(request)
        return response
    except BaseException:
        _abort(request)  # the handler turns this into a logged internal error
        raise
    await response.write_eof()
    return response


def _may_carry_body(method: str, status: int) -> bool:
    """Whether a response may carry a body (RFC 9110 §6.4.1). HEAD, 1xx, 204 and 304
    answers keep the upstream's Content-Length as it is, with no body: they take the
    streamed path, where the length is never recomputed from the bytes."""
    return method != "HEAD" and status >= 200 and status not in (204, 304)


def _abort(request: web.BaseRequest) -> None:
    if request.transport is not None:
        request.transport.abort()
