"""The check listener's server: HTTP/1.1 parsed by llhttp (`httptools`), one answer written
per check, no web framework in between.

A check is a head in and a head (plus a small body) out: aiohttp's request and response
objects, its handler wrapper and its writer cost about five times the decision itself, so
the listener that other proxies call for every request of theirs answers at the socket.
It holds the proxy listener's rules for what may arrive (SPEC §3 "Other refusals"):

- the head within `server.header_timeout` (from the connection's start, or the first
  byte of the next request), idle keep-alive connections closed after
  `server.keepalive_timeout`;
- a request line or field line over `server.max_header_field` bytes, more than
  `server.max_header_count` fields or `server.max_header_bytes` in all: 431 and close;
- anything llhttp (strict mode) refuses: 400 and close. Refusals are the gateway's JSON
  bodies and never echo the input (which may hold a key);
- a body sent with a check is parsed as that request's body (never as the next request)
  and not read further; checks pipelined on one connection are answered in order, at
  most `PIPELINED` parsed ahead (then the connection is not read until they are answered);
- while the gateway drains, every answer closes its connection.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.admin.health import Readiness
from gateway.auth.errors import Refusal
from gateway.check.http_api import CheckAnswer, CheckHandler, refused
from gateway.config import ServerConfig
from gateway.observability import metrics
from gateway.observability.request_ids import request_id
from gateway.proxy.errors import BadRequest, HeadersTooLarge, InternalError
from gateway.proxy.http_head import http_head

log = logging.getLogger("keygate")
PIPELINED = 16  # checks parsed ahead of their answers on one connection
MAX_BODY = 2**20  # bytes of a check's body accepted (and ignored); beyond: 413
LINGER = 2.0  # seconds input is read and discarded after a connection's last answer
LINGER_BYTES = 2**22  # ... and at most this many bytes
# Reason phrases as aiohttp's server writes them (the proxy listener's answers).
_REASONS = {status.value: status.phrase for status in HTTPStatus}


class _TooLarge(Exception):
    """Raised from a parser callback: the head is over a limit (431)."""


class _BodyOverLimit(Exception):
    """Raised from a parser callback: a check's body is over MAX_BODY (413)."""


class BodyTooLarge(Refusal):
    status = 413
    code = "body_too_large"
    message = "A check request needs no body: send the original request's head only."


@dataclass(slots=True)
class _Check:
    method: str
    target: str
    headers: CIMultiDictProxy[str]
    keep_alive: bool
    head_only: bool  # a HEAD request: the answer's body is not sent
    refusal: Refusal | None = None  # what the parser refused, answered in its turn


def _refusal_of(exc: httptools.HttpParserError) -> Refusal:
    """The refusal for what llhttp or the head's limits refused."""
    cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
    if isinstance(cause, _TooLarge):
        return HeadersTooLarge()
    if isinstance(cause, _BodyOverLimit):
        return BodyTooLarge()
    return BadRequest()


class _HttpDate:
    """The `Date` field, formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.value = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.value = email.utils.formatdate(second, usegmt=True)
        return self.value


_DATE = _HttpDate()
_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def encode_answer(answer: CheckAnswer, *, head_only: bool, close: bool) -> bytes:
    fields = [("Date", _DATE.now()), *answer.fields, ("Content-Length", str(len(answer.body)))]
    if close:
        fields.append(("Connection", "close"))
    reason = _REASONS.get(answer.status, "Unknown")
    head = http_head(f"HTTP/1.1 {answer.status} {reason}", fields)
    return head if head_only else head + answer.body


Answer = Callable[[str, str, CIMultiDictProxy[str], str | None], Awaitable[CheckAnswer]]


class CheckConnection(asyncio.Protocol):
    def __init__(self, server: CheckServer) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.pending: collections.deque[_Check] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.lingering = False  # answered for the last time; input is read and discarded
        self.discarded = 0
        self.stopped = False  # nothing more is parsed: an error or an upgrade ended it
        self.state = "head"  # "head" (a head may be arriving), "answering" or "idle"
        self.read_paused = False
        self.write_paused = False
        # The head being parsed.
        self.url = b""
        self.fields: list[tuple[str, str]] = []
        self.head_bytes = 0
        self.head_fed = 0  # bytes fed while a head was in progress (llhttp buffers a line)
        self.body_bytes = 0
        self.in_head = False  # part of a head was parsed
        # When the current wait (head or idle keep-alive) ends, loop time; None while a
        # check is answered. One timer per connection, re-armed only when it fires.
        self.deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.server.connections.add(self)
        self._wait(self.limits.header_timeout)  # a connection that never sends is closed

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the asker is gone: its answer has nowhere to go

    def data_received(self, data: bytes) -> None:
        if self.closing or self.stopped:
            if self.lingering:
                self.discarded += len(data)
                if self.discarded > LINGER_BYTES:
                    self.close()
            return
        if self.in_head:
            # A field line is handed over only once it is complete: bound what waits.
            self.head_fed += len(data)
            if self.head_fed > self.server.max_head_fed:
                self._refuse_now(HeadersTooLarge())
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # (An original request's `Upgrade` copied into the check.) The check is
            # answered; nothing after its head is read, and the connection then closes.
            self._stop()
        except httptools.HttpParserError as exc:
            # Answered in its turn, after the checks parsed before it, then closed.
            self._refuse_now(_refusal_of(exc))

    def pause_writing(self) -> None:
        self.write_paused = True
        self._read_less()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._read_more()

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_fed = 0
        if self.state == "idle":
            self.state = "head"
            self._wait(self.limits.header_timeout)  # the next head's clock starts
        self.url = b""
        self.fields = []
        self.head_bytes = 0
        self.body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_header_field:
            raise _TooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        line = len(name) + len(value) + 4  # name: value CRLF
        self.head_bytes += line
        if (
            line > self.limits.max_header_field + 2
            or len(self.fields) >= self.limits.max_header_count
            or self.head_bytes > self.limits.max_header_bytes
        ):
            raise _TooLarge()
        self.fields.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.closing:
            return
        method = self.parser.get_method().decode("ascii", "replace")
        check = _Check(
            method,
            self.url.decode("utf-8", "surrogateescape"),
            CIMultiDictProxy(CIMultiDict(self.fields)),
            self.parser.should_keep_alive(),
            method == "HEAD",
        )
        if not self.pending and self.task is None:
            # Nothing ahead of it: when memory alone decides, answered here and now,
            # without a task (most checks: a proven key, no rate limit).
            answer = self._answer_now(check)
            if answer is not None:
                self._write(answer, check)
                if not self.closing:
                    self.state = "idle"
                    self._wait(self.limits.keepalive_timeout)
                return
        self.state = "answering"
        self.deadline = None  # no head or idle time runs while checks are answered
        self.pending.append(check)
        if len(self.pending) >= PIPELINED:
            self._read_less()
        self._answer_soon()

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY:
            raise _BodyOverLimit()

    # -- answers ---------------------------------------------------------------------

    def _answer_now(self, check: _Check) -> CheckAnswer | None:
        try:
            return self.server.answer_now(check.method, check.target, check.headers, self.peer)
        except Exception as exc:  # the handler's own guard failed: still an answer
            return _internal_error(exc)

    def _answer_soon(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._answer_pending())

    async def _answer_pending(self) -> None:
        while self.pending and not self.closing:
            check = self.pending.popleft()
            if check.refusal is not None:
                # Not a check at all: never counted as a decision (as on the proxy listener).
                refusal = check.refusal
                metrics.REQUESTS.add(("none", "other", str(refusal.status), refusal.code))
                answer = refused(refusal, request_id(None))
                answer.close = True
            else:
                try:
                    answer = await self.server.answer(
                        check.method, check.target, check.headers, self.peer
                    )
                except Exception as exc:  # the handler's own guard failed: still answered
                    answer = _internal_error(exc)
            self._write(answer, check)
        self.task = None
        if self.closing:
            return
        if self.stopped:
            self._finish()  # everything parsed before the end was answered
            return
        self._read_more()
        if self.in_head:  # part of the next head arrived meanwhile: its clock runs now
            self.state = "head"
            self._wait(self.limits.header_timeout)
        else:
            self.state = "idle"
            self._wait(self.limits.keepalive_timeout)

    def _write(self, answer: CheckAnswer, check: _Check) -> None:
        close = answer.close or not check.keep_alive or self.server.readiness.draining
        if self.transport is None:
            return
        self.transport.write(encode_answer(answer, head_only=check.head_only, close=close))
        if close:
            self._finish()

    def _refuse_now(self, refusal: Refusal) -> None:
        self.pending.append(_Check("", "", _NO_HEADERS, False, False, refusal))
        self._stop()

    def _stop(self) -> None:
        self.stopped = True
        self._read_less()
        if self.pending:
            self._answer_soon()
        elif self.task is None:
            self._finish()

    def _finish(self) -> None:
        """After the last answer: end the stream (a FIN after the answer), then read on and
        discard for up to LINGER s. Closing with unread input would reset the connection,
        and the reset can reach the client before it has read the answer."""
        self.closing = True
        self.pending.clear()
        transport = self.transport
        if transport is None or self.lingering:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.lingering = True
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        asyncio.get_running_loop().call_later(LINGER, self.close)

    def close(self) -> None:
        self.closing = True
        self.pending.clear()
        if self.transport is not None:
            self.transport.close()

    # -- flow control and timers ---------------------------------------------------------

    def _read_less(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _read_more(self) -> None:
        if (
            self.read_paused
            and not self.write_paused
            and len(self.pending) < PIPELINED
            and self.transport is not None
        ):
            self.read_paused = False
            self.transport.resume_reading()

    def _wait(self, seconds: float) -> None:
        """Close the connection unless a head completes within `seconds` from now."""
        if seconds <= 0:
            self.deadline = None
            return
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + seconds
        if self.timer is None:
            self.timer = loop.call_at(self.deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        self.timer = None
        if self.closing:
            return
        loop = asyncio.get_running_loop()
        if self.deadline is None:  # answering: the next wait arms its own deadline
            return
        if loop.time() >= self.deadline:
            self.close()
        else:
            self.timer = loop.call_at(self.deadline, self._timer_fired)


def _internal_error(exc: Exception) -> CheckAnswer:
    log.error("unhandled error in the check listener", exc_info=exc)
    metrics.REQUESTS.add(("none", "other", "500", "internal_error"))
    answer = refused(InternalError(), request_id(None))
    answer.close = True
    return answer


class CheckServer:
    """The listening socket and its connections; `close` drains checks in flight."""

    def __init__(self, handler: CheckHandler, server: ServerConfig, readiness: Readiness) -> None:
        self.answer: Answer = handler.answer
        self.answer_now = handler.answer_now
        self.limits = server
        # Bytes of one head received before it must have ended (llhttp buffers a line).
        self.max_head_fed = server.max_header_bytes + 2 * server.max_header_field
        self.readiness = readiness
        self.connections: set[CheckConnection] = set()
        self.listening: asyncio.Server | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool) -> None:
        loop = asyncio.get_running_loop()
        self.listening = await loop.create_server(
            lambda: CheckConnection(self), host, port, reuse_port=reuse_port, backlog=2048
        )

    async def close(self, drain_timeout: float) -> None:
        """Stop accepting; give checks in flight up to `drain_timeout` s; close every connection."""
        if self.listening is not None:
            self.listening.close()
        busy = [c.task for c in self.connections if c.task is not None]
        if busy:
            await asyncio.wait(busy, timeout=drain_timeout)
        for conn in list(self.connections):
            conn.close()
