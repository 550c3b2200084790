"""One pooled keep-alive client session per upstream."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import hdrs
from multidict import CIMultiDict
from yarl import URL

from gateway.config import UpstreamConfig


@dataclass
class Upstream:
    config: UpstreamConfig
    session: aiohttp.ClientSession
    base: str  # scheme://host:port plus any base path, without a trailing slash
    host: str  # the Host header the upstream gets: host[:port] of its URL

    def url(self, path: str, query: str) -> URL:
        target = self.base + path + (f"?{query}" if query else "")
        return URL(target, encoded=True)  # the normalised path is sent as is

    def ws_url(self, path: str, query: str) -> URL:
        url = self.url(path, query)
        return url.with_scheme("wss" if url.scheme == "https" else "ws")


# Headers aiohttp's client would add on its own; a proxy sends only what the client sent.
_NOT_ADDED: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
)


# The complete headers of the request about to be sent in this task (see `send_headers`).
_PREPARED: ContextVar[CIMultiDict[str] | None] = ContextVar("keygate_prepared", default=None)


def send_headers(headers: CIMultiDict[str]) -> Token[CIMultiDict[str] | None]:
    """Hand `headers` (Host first, nothing to add) to the next request this task builds.

    Passed as `headers=` instead, they would be copied one by one in Python twice, by
    `ClientSession._prepare_headers` and `ClientRequest.update_headers`: about 1 % of a
    proxied request's instructions. Returns the token for `sent_headers`, which must run
    once the request is built (`forward_http` calls it in a `finally`).
    """
    return _PREPARED.set(headers)


def sent_headers(token: Token[CIMultiDict[str] | None]) -> None:
    _PREPARED.reset(token)


class _ForwardedRequest(aiohttp.ClientRequest):
    """A client request that adds no default headers, and takes handed-over headers as is.

    Same outcome as `skip_auto_headers` on the session, without aiohttp building and
    sorting that skip list and copying the headers for every request.
    """

    def update_headers(self, headers: Any) -> None:
        prepared = _PREPARED.get()
        if prepared is not None:
            self.headers = prepared  # built for this request alone; Host is in it
            return
        # Nothing handed over: a WebSocket handshake (ws_connect adds its own fields to the
        # headers it passes). aiohttp's own copies them one by one in Python, to let a Host
        # header through; relay_websocket drops the forwarded Host, so one bulk copy behind
        # the upstream's Host does the same.
        copied: CIMultiDict[str] = CIMultiDict()
        copied[hdrs.HOST] = self.url.host_port_subcomponent or ""
        if headers:
            copied.extend(headers)
        self.headers = copied

    def update_auto_headers(self, skip_auto_headers: object) -> None:
        self._skip_auto_headers = _NOT_ADDED  # also keeps a body's Content-Type unset


def open_upstreams(configs: Mapping[str, UpstreamConfig]) -> dict[str, Upstream]:
    upstreams = {}
    for name, cfg in configs.items():
        connector = aiohttp.TCPConnector(
            limit=cfg.max_connections, limit_per_host=cfg.max_connections,
            keepalive_timeout=30, enable_cleanup_closed=True,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.timeout
            ),
            auto_decompress=False,  # bodies pass through byte for byte
            request_class=_ForwardedRequest,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )
        host = URL(cfg.url).host_port_subcomponent or ""
        upstreams[name] = Upstream(cfg, session, cfg.url.rstrip("/"), host)
    return upstreams


async def close_upstreams(upstreams: Mapping[str, Upstream]) -> None:
    for upstream in upstreams.values():
        await upstream.session.close()
