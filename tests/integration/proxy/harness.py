"""The proxy suite's gateway: one route per behaviour under test, and its processes.

Keys, credentials, env and error checks are the shared ones of tests/support/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.proxy.wire import ProbeUpstream, RawResponse
from tests.support.configs import CHEAP_ARGON2, gateway_config
from tests.support.errors import Reply, assert_error
from tests.support.gateway_process import GatewayProcess, UpstreamProcess
from tests.support.stores import Stores

LOCAL_TTL = 1.0


def proxy_config(
    upstream: str, probe_port: int, dead_port: int, *, accept_envs: list[str] | None = None
) -> dict[str, Any]:
    """One route per behaviour under test; see each test for the one it uses."""
    keys: dict[str, Any] = {"argon2": CHEAP_ARGON2, "verify_threads": 2}
    if accept_envs is not None:
        keys["accept_envs"] = accept_envs
    return gateway_config(
        upstreams={
            "echo": {"url": upstream, "connect_timeout": "2s", "timeout": "10s"},
            "slow": {"url": upstream, "connect_timeout": "2s", "timeout": "1s"},
            "dead": {
                "url": f"http://127.0.0.1:{dead_port}",
                "connect_timeout": "1s",
                "timeout": "2s",
            },
            "probe": {"url": f"http://127.0.0.1:{probe_port}", "timeout": "30s"},
        },
        routes=[
            {"path": "/public/**", "upstream": "echo", "public": True, "name": "public"},
            {
                "path": "/api/read/**",
                "methods": ["GET"],
                "upstream": "echo",
                "scopes": ["read"],
                "name": "read",
            },
            {
                "path": "/api/write/**",
                "methods": ["POST", "PUT"],
                "upstream": "echo",
                "scopes": ["write"],
                "name": "write",
            },
            {
                "path": "/api/multi",
                "upstream": "echo",
                "scopes": ["read", "reports:export"],
                "name": "multi",
            },
            {
                "path": "/api/orgs/{org}/**",
                "upstream": "echo",
                "scopes": ["read"],
                "org_param": "org",
                "name": "org",
            },
            {
                "path": "/api/creds/**",
                "upstream": "echo",
                "scopes": ["read"],
                "forward_credentials": True,
                "name": "creds",
            },
            {
                "path": "/api/small/**",
                "upstream": "echo",
                "scopes": ["write"],
                "max_body": "1KiB",
                "name": "small",
            },
            {"path": "/api/any/**", "upstream": "echo", "name": "any"},
            {
                "path": "/api/limited/**",
                "upstream": "echo",
                "scopes": ["read"],
                "name": "limited",
                "rate_limit": {"requests": 3, "per": "1h"},
            },
            {
                "path": "/api/limited-org/{org}/**",
                "upstream": "echo",
                "scopes": ["read"],
                "org_param": "org",
                "name": "limited-org",
                "rate_limit": {"requests": 3, "per": "1h"},
            },
            {
                "path": "/ws/**",
                "upstream": "echo",
                "websocket": True,
                "scopes": ["events"],
                "name": "ws",
            },
            {
                "path": "/_demo/slow",
                "methods": ["GET"],
                "upstream": "slow",
                "scopes": ["read"],
                "name": "slow",
            },
            {
                "path": "/_demo/**",
                "methods": ["GET"],
                "upstream": "echo",
                "scopes": ["read"],
                "name": "demo",
            },
            {"path": "/dead/**", "upstream": "dead", "scopes": ["read"], "name": "dead"},
            {
                "path": "/probe/ws",
                "upstream": "probe",
                "websocket": True,
                "scopes": ["read"],
                "name": "probe-ws",
            },
            {
                "path": "/probe/own-limits",
                "methods": ["GET"],
                "upstream": "probe",
                "scopes": ["read"],
                "name": "probe-limited",
                "rate_limit": {"requests": 5, "per": "1h"},
            },
            {
                "path": "/probe/**",
                "methods": ["GET"],
                "upstream": "probe",
                "scopes": ["read"],
                "name": "probe",
            },
        ],
        keys=keys,
        cache={"local_ttl": f"{LOCAL_TTL:g}s"},
    )


@dataclass
class Stack:
    """The processes every proxy test talks to."""

    stores: Stores
    upstream: UpstreamProcess
    probe: ProbeUpstream
    gateway: GatewayProcess
    dead_port: int
    log_dir: Path

    def config(self, **kwargs: Any) -> dict[str, Any]:
        return proxy_config(self.upstream.url, self.probe.port, self.dead_port, **kwargs)


def raw_error(reply: RawResponse, status: int, code: str) -> dict[str, Any]:
    """`assert_error` on a response read off a raw socket."""
    return assert_error(Reply(reply.status, dict(reply.headers), reply.body.decode()), status, code)
