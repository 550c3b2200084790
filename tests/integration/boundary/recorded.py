"""A real gateway in front of the recording upstream (tests/support/recording_upstream.py),
with keys: what every boundary test sends through and checks on the wire.

One config serves every boundary test. Routes are public unless a test is about
authentication, so most tests attack the HTTP boundary itself: `/raw/**` (and its
variants) and `/d/**`, `/creds/**` (scope `write`) go to the recording upstream, `/echo/**`
and `/ws/**` to the echo upstream when there is one, `/broken/**` to a host aiohttp
cannot encode.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.embedded import free_port
from tests.support.configs import gateway_config, gateway_env
from tests.support.credentials import assert_no_key_in
from tests.support.gateway_process import GatewayProcess, start_gateway, stopped_cleanly
from tests.support.http1 import Fields, ProtocolError, response_framing, take_chunked
from tests.support.http1 import take_response_head as _take_head
from tests.support.keys import MadeKey, key_maker
from tests.support.recording_upstream import RecordingUpstream
from tests.support.stores import Stores

HEADER_TIMEOUT = 1.0
BODY_IDLE_TIMEOUT = 1.0
MAX_BODY = 4096
MAX_MESSAGE = 64 * 1024
# A host name no resolver accepts (a 64-character label): aiohttp's IDNA encoding raises
# UnicodeError, which no refusal maps, so requests on this route fail inside the gateway.
UNENCODABLE_HOST = "a" * 64 + ".invalid"


def boundary_config(
    upstream_port: int, *, echo_url: str | None = None, trusted_proxies: Sequence[str] = ()
) -> dict[str, Any]:
    recorder = f"http://127.0.0.1:{upstream_port}"
    upstreams: dict[str, Any] = {
        "raw": {"url": recorder, "timeout": "10s"},
        "rec": {"url": recorder, "timeout": "5s"},
        "broken": {"url": f"http://{UNENCODABLE_HOST}", "timeout": "2s"},
    }
    routes: list[dict[str, Any]] = [
        {
            "path": "/raw/small/**",
            "upstream": "raw",
            "public": True,
            "max_body": "1KiB",
            "name": "raw-small",
        },
        {"path": "/raw/**", "upstream": "raw", "public": True, "name": "raw"},
        {
            "path": "/ws-raw/**",
            "upstream": "raw",
            "public": True,
            "websocket": True,
            "name": "ws-raw",
        },
        {
            "path": "/auth/**",
            "upstream": "raw",
            "scopes": ["write"],
            "max_body": "1KiB",
            "name": "auth",
        },
        {
            "path": "/d/**",
            "upstream": "rec",
            "scopes": ["write"],
            "max_body": f"{MAX_BODY // 1024}KiB",
            "name": "diff",
        },
        {
            "path": "/creds/**",
            "upstream": "rec",
            "scopes": ["write"],
            "forward_credentials": True,
            "name": "creds",
        },
        {"path": "/broken/**", "upstream": "broken", "public": True, "name": "broken"},
    ]
    if echo_url is not None:
        upstreams["echo"] = {"url": echo_url, "timeout": "10s"}
        routes += [
            {
                "path": "/ws/**",
                "upstream": "echo",
                "public": True,
                "websocket": True,
                "max_message": f"{MAX_MESSAGE // 1024}KiB",
                "name": "ws",
            },
            {
                "path": "/echo/small/**",
                "upstream": "echo",
                "public": True,
                "max_body": "1KiB",
                "name": "echo-small",
            },
            {"path": "/echo/**", "upstream": "echo", "public": True, "name": "echo"},
        ]
    server = {
        "drain_timeout": "2s",
        "store_timeout": "1s",
        "header_timeout": f"{HEADER_TIMEOUT:g}s",
        "body_idle_timeout": f"{BODY_IDLE_TIMEOUT:g}s",
        "keepalive_timeout": "30s",
        "trusted_proxies": list(trusted_proxies),
    }
    return gateway_config(upstreams, routes, server=server)


@dataclass
class Keys:
    good: MadeKey  # scope write: authorised on every route
    read_only: MadeKey  # authenticates, but 403 on every route
    victim: MadeKey  # its id, presented with wrong secrets

    @property
    def bad_secret(self) -> str:
        return self.victim.with_secret("Z" * 32)


@dataclass
class Recorded:
    gateway: GatewayProcess
    upstream: RecordingUpstream
    keys: Keys

    @property
    def port(self) -> int:
        return self.gateway.proxy_port

    def __repr__(self) -> str:  # hypothesis prints its arguments: never the keys
        return f"<gateway on {self.port}, recording upstream on {self.upstream.port}>"


def _make_keys(gw: GatewayProcess) -> Keys:
    async def run() -> Keys:
        async with key_maker(gw.config_path, gw.env) as maker:
            org = await maker.org("boundary")
            good = await maker.key(["write"], org=org, env="test")
            read_only = await maker.key(["read"], org=org)
            victim = await maker.key(["write"], org=org)
            return Keys(good, read_only, victim)

    return asyncio.run(run())


@contextmanager
def recording_upstream() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream(free_port())
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()


@contextmanager
def recorded_gateway(
    stores: Stores,
    log_dir: Path,
    *,
    name: str,
    upstream: RecordingUpstream | None = None,
    echo_url: str | None = None,
    trusted_proxies: Sequence[str] = (),
) -> Iterator[Recorded]:
    """A gateway in front of `upstream` (its own recording upstream if None)."""
    with contextlib.ExitStack() as stack:
        if upstream is None:
            upstream = stack.enter_context(recording_upstream())
        config = boundary_config(upstream.port, echo_url=echo_url, trusted_proxies=trusted_proxies)
        gw = start_gateway(config, log_dir, gateway_env(stores), name=name)
        with stopped_cleanly(gw):
            yield Recorded(gw, upstream, _make_keys(gw))
        assert_no_key_in(gw.process.output(), f"{name}'s output")


def canonical(name: str) -> str:
    """A field name as CGI/WSGI, PHP, nginx with underscores and Rack read it (the
    tests' own oracle, independent of gateway.proxy.headers)."""
    return name.lower().replace("_", "-").replace(".", "-")


# -- the client side: raw bytes out, strictly parsed responses in ---------------------------


@dataclass
class Answer:
    status: int
    fields: Fields
    body: bytes

    def all(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for k, v in self.fields if k.lower() == lower]

    def one(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if len(values) == 1 else None


@dataclass
class Exchange:
    answers: list[Answer]  # final responses, in order
    interim: list[int]  # 1xx statuses seen
    closed: bool  # the gateway closed the connection
    reset: bool = False  # ... with a reset (answers in flight may be lost)
    protocol_error: str | None = None


def take_response(buf: bytearray, method: str = "POST") -> Answer | int | None:
    """One response from the front of `buf` (consumed); None if incomplete; for a 1xx,
    its status."""
    parsed = _take_head(buf)
    if parsed is None:
        return None
    head, used = parsed
    if 100 <= head.status < 200:
        del buf[:used]
        return head.status
    framing = response_framing(head, method)
    if framing.kind == "length":
        if len(buf) < used + framing.length:
            return None
        body = bytes(buf[used : used + framing.length])
        del buf[: used + framing.length]
    elif framing.kind == "chunked":
        chunked = take_chunked(buf, used)
        if chunked is None:
            return None
        body = chunked[0].body
        del buf[: chunked[1]]
    elif framing.kind == "close":
        return None  # complete only at EOF; the caller handles that
    else:
        body = b""
        del buf[:used]
    return Answer(head.status, head.fields, body)


class RawClient:
    """One connection to the gateway: send bytes, collect answers until told to stop."""

    def __init__(self, port: int, timeout: float = 3.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()
        self.answers: list[Answer] = []
        self.interim: list[int] = []
        self.closed = False
        self.reset = False
        self.error: str | None = None

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        """Send what the gateway will still take (it may close on a refusal: what it
        answered before that is still read)."""
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def read_until(self, answers: int, *, interim: bool = False, idle: float = 2.0) -> None:
        """Read until `answers` final responses in all (or a 1xx, when `interim`), the
        connection closes, or nothing arrives for `idle` seconds."""
        deadline = time.monotonic() + idle
        while not self.closed and self.error is None:
            while True:
                try:
                    got = take_response(self.buf)
                except ProtocolError as exc:
                    self.error = str(exc)
                    return
                if got is None:
                    break
                if isinstance(got, int):
                    self.interim.append(got)
                    if interim:
                        return
                else:
                    self.answers.append(got)
            if len(self.answers) >= answers:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except OSError:  # a reset may have discarded answers already received
                self.reset = True
                data = b""
            if not data:
                self.closed = True
                return
            self.buf += data
            deadline = time.monotonic() + idle

    def exchange(self) -> Exchange:
        return Exchange(self.answers, self.interim, self.closed, self.reset, self.error)
