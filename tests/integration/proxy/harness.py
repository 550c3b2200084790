"""The end-to-end harness shared by the proxy tests: gateway config, keys, error checks.

Kept out of conftest.py so that every test module imports one and the same module (the
session's KEYGATE_SECRET and the list of issued keys must be single values).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from gateway.keys.format import base62_checksum
from gateway.keys.models import Actor
from gateway.keys.service import KeyService
from tests.integration.proxy.wire import ProbeUpstream, RawResponse
from tests.support.gateway_process import REPO_ROOT, GatewayProcess, UpstreamProcess
from tests.support.stores import Stores

ACTOR = Actor(principal="test:proxy")
SECRET = secrets.token_urlsafe(48)  # KEYGATE_SECRET shared by every gateway of the session
LOCAL_TTL = 1.0
CHEAP_ARGON2 = {"time_cost": 1, "memory_kib": 1024, "parallelism": 1}
# Every full key handed out this session: none may ever appear in a gateway's output.
ISSUED: list[str] = []


def gateway_env(stores: Stores, database_url: str | None = None) -> dict[str, str]:
    return {
        "KEYGATE_SECRET": SECRET,
        "KEYGATE_DATABASE_URL": database_url or stores.database_url,
        "KEYGATE_REDIS_URL": stores.redis_url,
        "KEYGATE_ADMIN_TOKEN": secrets.token_urlsafe(32),
    }


def gateway_config(
    upstream: str, probe_port: int, dead_port: int, *, accept_envs: list[str] | None = None
) -> dict[str, Any]:
    """One route per behaviour under test; see each test for the one it uses."""
    keys: dict[str, Any] = {"argon2": CHEAP_ARGON2, "verify_threads": 2}
    if accept_envs is not None:
        keys["accept_envs"] = accept_envs
    return {
        "dev": False,
        "keys": keys,
        "cache": {"local_ttl": f"{LOCAL_TTL:g}s"},
        "last_used": {"flush_interval": "1s"},
        "server": {"drain_timeout": "3s", "store_timeout": "1s"},
        "log": {"level": "info", "format": "json", "access_log": True},
        "upstreams": {
            "echo": {"url": upstream, "connect_timeout": "2s", "timeout": "10s"},
            "slow": {"url": upstream, "connect_timeout": "2s", "timeout": "1s"},
            "dead": {"url": f"http://127.0.0.1:{dead_port}", "connect_timeout": "1s",
                     "timeout": "2s"},
            "probe": {"url": f"http://127.0.0.1:{probe_port}", "timeout": "30s"},
        },
        "routes": [
            {"path": "/public/**", "upstream": "echo", "public": True, "name": "public"},
            {"path": "/api/read/**", "methods": ["GET"], "upstream": "echo",
             "scopes": ["read"], "name": "read"},
            {"path": "/api/write/**", "methods": ["POST", "PUT"], "upstream": "echo",
             "scopes": ["write"], "name": "write"},
            {"path": "/api/multi", "upstream": "echo", "scopes": ["read", "reports:export"],
             "name": "multi"},
            {"path": "/api/orgs/{org}/**", "upstream": "echo", "scopes": ["read"],
             "org_param": "org", "name": "org"},
            {"path": "/api/creds/**", "upstream": "echo", "scopes": ["read"],
             "forward_credentials": True, "name": "creds"},
            {"path": "/api/small/**", "upstream": "echo", "scopes": ["write"],
             "max_body": "1KiB", "name": "small"},
            {"path": "/api/any/**", "upstream": "echo", "name": "any"},
            {"path": "/api/limited/**", "upstream": "echo", "scopes": ["read"],
             "name": "limited", "rate_limit": {"requests": 3, "per": "1h"}},
            {"path": "/api/limited-org/{org}/**", "upstream": "echo", "scopes": ["read"],
             "org_param": "org", "name": "limited-org",
             "rate_limit": {"requests": 3, "per": "1h"}},
            {"path": "/ws/**", "upstream": "echo", "websocket": True, "scopes": ["events"],
             "name": "ws"},
            {"path": "/_demo/slow", "methods": ["GET"], "upstream": "slow", "scopes": ["read"],
             "name": "slow"},
            {"path": "/_demo/**", "methods": ["GET"], "upstream": "echo", "scopes": ["read"],
             "name": "demo"},
            {"path": "/dead/**", "upstream": "dead", "scopes": ["read"], "name": "dead"},
            {"path": "/probe/ws", "upstream": "probe", "websocket": True, "scopes": ["read"],
             "name": "probe-ws"},
            {"path": "/probe/own-limits", "methods": ["GET"], "upstream": "probe",
             "scopes": ["read"], "name": "probe-limited",
             "rate_limit": {"requests": 5, "per": "1h"}},
            {"path": "/probe/**", "methods": ["GET"], "upstream": "probe", "scopes": ["read"],
             "name": "probe"},
        ],
    }


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
        return gateway_config(self.upstream.url, self.probe.port, self.dead_port, **kwargs)


def assert_no_key_in(output: str, where: str) -> None:
    leaked = [k[:12] + "…" for k in ISSUED if k in output]
    assert not leaked, f"full API keys found in {where}: {leaked}"


@dataclass(frozen=True)
class MadeKey:
    secret: str
    id: str
    display_prefix: str
    org: str
    scopes: tuple[str, ...]
    env: str
    expires_at: datetime | None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    def with_secret(self, secret: str) -> str:
        """This key's prefix and id with another 32-character secret, valid checksum."""
        body = self.display_prefix + secret
        return body + base62_checksum(body)


class KeyMaker:
    """Orgs and keys with unique names, through the real service on the session stores."""

    def __init__(self, service: KeyService, config_path: Path, env: dict[str, str]) -> None:
        self.service = service
        self.config_path = config_path
        self.env = env

    async def org(self, label: str = "t") -> str:
        slug = f"{label[:40]}-{uuid.uuid4().hex[:10]}"
        await self.service.create_org(ACTOR, slug)
        return slug

    async def key(
        self,
        scopes: list[str],
        *,
        org: str | None = None,
        env: str = "live",
        expires_in: float | None = None,
    ) -> MadeKey:
        org = org or await self.org()
        created = await self.service.create_key(
            ACTOR, org, "proxy-test", scopes, env=env, expires_in=expires_in
        )
        ISSUED.append(created.secret)
        k = created.key
        return MadeKey(created.secret, k.id, k.display_prefix, k.org, tuple(k.scopes), k.env,
                       k.expires_at)

    async def revoke(self, key_id: str) -> None:
        await self.service.revoke_key(ACTOR, key_id, reason="test")

    async def cli(self, *args: str) -> str:
        """Run the real `keygate` command in a subprocess; return stdout (exit 0 required)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *args, "--config", str(self.config_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**_base_env(), **self.env}, cwd=REPO_ROOT,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, f"keygate {' '.join(args)}: {err.decode()}"
        return out.decode()


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}


REALM = 'Bearer realm="keygate"'


def assert_error(
    status: int, headers: Any, body: Any, expect_status: int, code: str
) -> dict[str, Any]:
    """The shape every refusal shares (§3); returns the `error` object."""
    assert status == expect_status, body
    assert headers.get("Content-Type", "").split(";")[0] == "application/json"
    assert headers.get("Cache-Control") == "no-store"
    server = headers.get("Server", "")
    assert "aiohttp" not in server.lower() and "python" not in server.lower(), server
    error = body["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == headers.get("X-Request-Id")
    return dict(error)


async def get_error(
    http: aiohttp.ClientSession, url: str, status: int, code: str, **kwargs: Any
) -> tuple[dict[str, Any], aiohttp.ClientResponse]:
    """Make a request with aiohttp and check it was refused with `status` and `code`."""
    method = kwargs.pop("method", "GET")
    async with http.request(method, url, **kwargs) as reply:
        body = await reply.json(content_type=None)
        error = assert_error(reply.status, reply.headers, body, status, code)
        return error, reply


def raw_error(reply: RawResponse, status: int, code: str) -> dict[str, Any]:
    headers = dict(reply.headers)
    return assert_error(reply.status, headers, reply.json(), status, code)


def invalid_token_header(reply_headers: Any) -> str:
    value: str = reply_headers["WWW-Authenticate"]
    assert value.startswith(f'{REALM}, error="invalid_token", error_description="'), value
    assert value.endswith('"')
    return value
