"""One pooled keep-alive client session per upstream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
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
        host = URL(cfg.url).host_port_subcomponent or ""
        upstreams[name] = Upstream(cfg, session, cfg.url.rstrip("/"), host)
    return upstreams


async def close_upstreams(upstreams: Mapping[str, Upstream]) -> None:
    for upstream in upstreams.values():
        await upstream.session.close()
