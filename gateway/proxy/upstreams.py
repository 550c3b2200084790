"""The clients of each upstream: a lean keep-alive pool for requests without a body over
plain HTTP (`gateway.proxy.upstream_client`), and aiohttp's ClientSession for the rest
(request bodies, HEAD, https upstreams, WebSocket handshakes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from gateway.config import UpstreamConfig
from gateway.proxy.upstream_client import UpstreamPool

# Request targets whose URL is kept per upstream: the same few paths recur, and building a
# URL costs ten times a dict lookup. Emptied when full (a path scan cannot grow it).
URL_MEMO_SIZE = 1024


@dataclass
class Upstream:
    config: UpstreamConfig
    session: aiohttp.ClientSession
    base: str  # scheme://host:port plus any base path, without a trailing slash
    host: str  # the Host header the upstream gets: host[:port] of its URL
    pool: UpstreamPool | None = None  # plain-HTTP upstreams only
    base_path: str = ""  # the URL's path, without a trailing slash
    _urls: dict[tuple[str, str], URL] = field(default_factory=dict, repr=False)

    def url(self, path: str, query: str) -> URL:
        key = (path, query)
        url = self._urls.get(key)
        if url is None:
            target = self.base + path + (f"?{query}" if query else "")
            url = URL(target, encoded=True)  # the normalised path is sent as is
            if len(self._urls) >= URL_MEMO_SIZE:
                self._urls.clear()
            self._urls[key] = url
        return url

    def target(self, path: str, query: str) -> str:
        """The request target the lean pool sends: the base path, the path, the query."""
        return self.base_path + path + (f"?{query}" if query else "")

    def ws_url(self, path: str, query: str) -> URL:
        url = self.url(path, query)
        return url.with_scheme("wss" if url.scheme == "https" else "ws")


# Headers aiohttp's client would add on its own (a body's Content-Type included): a proxy
# sends only what the client sent.
NOT_ADDED = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


def open_upstreams(configs: Mapping[str, UpstreamConfig]) -> dict[str, Upstream]:
    upstreams = {}
    for name, cfg in configs.items():
        connector = aiohttp.TCPConnector(
            limit=cfg.max_connections,
            limit_per_host=cfg.max_connections,
            keepalive_timeout=30,
            enable_cleanup_closed=True,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.timeout
            ),
            auto_decompress=False,  # bodies pass through byte for byte
            skip_auto_headers=NOT_ADDED,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )
        url = URL(cfg.url)
        pool = None
        if url.scheme == "http" and url.host is not None and url.port is not None:
            pool = UpstreamPool(
                url.host,
                url.port,
                max_connections=cfg.max_connections,
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.timeout,
            )
        upstreams[name] = Upstream(
            cfg,
            session,
            cfg.url.rstrip("/"),
            url.host_port_subcomponent or "",
            pool,
            url.raw_path.rstrip("/"),
        )
    return upstreams


async def close_upstreams(upstreams: Mapping[str, Upstream]) -> None:
    for upstream in upstreams.values():
        if upstream.pool is not None:
            upstream.pool.close()
        await upstream.session.close()
