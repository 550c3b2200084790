"""End-to-end fixtures: a real demo upstream, a probe upstream and `keygate serve`.

The processes live for the whole session (starting them costs seconds), so tests never
truncate the stores: each test creates its own org (unique slug) and keys, and asserts
only on those. Keys are made through the real service (and, where the brief is about the
operator's tool, the real `keygate` CLI in a subprocess).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cli import open_service
from gateway.config import load_config
from gateway.embedded import free_port
from gateway.keys.format import base62_checksum
from gateway.keys.models import Actor
from gateway.keys.service import KeyService
from tests.integration.proxy.wire import ProbeUpstream
from tests.support.gateway_process import (
    REPO_ROOT,
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    start_upstream,
)
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
            {"path": "/ws/**", "upstream": "echo", "websocket": True, "scopes": ["events"],
             "name": "ws"},
            {"path": "/_demo/slow", "methods": ["GET"], "upstream": "slow", "scopes": ["read"],
             "name": "slow"},
            {"path": "/_demo/**", "methods": ["GET"], "upstream": "echo", "scopes": ["read"],
             "name": "demo"},
            {"path": "/dead/**", "upstream": "dead", "scopes": ["read"], "name": "dead"},
            {"path": "/probe/ws", "upstream": "probe", "websocket": True, "scopes": ["read"],
             "name": "probe-ws"},
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


@pytest.fixture(scope="session")
def proxy_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy-e2e")


@pytest.fixture(scope="session")
def upstream(proxy_log_dir: Path) -> Iterator[UpstreamProcess]:
    up = start_upstream(proxy_log_dir)
    try:
        yield up
    finally:
        up.process.stop(expect_code=0)


@pytest.fixture(scope="session")
def probe() -> Iterator[ProbeUpstream]:
    p = ProbeUpstream(free_port())
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="session")
def stack(
    stores: Stores, upstream: UpstreamProcess, probe: ProbeUpstream, proxy_log_dir: Path
) -> Iterator[Stack]:
    dead = closed_port()
    config = gateway_config(upstream.url, probe.port, dead)
    gw = start_gateway(config, proxy_log_dir, gateway_env(stores), name="gateway")
    try:
        yield Stack(stores, upstream, probe, gw, dead, proxy_log_dir)
    except BaseException:
        gw.process.kill()
        raise
    gw.process.stop(expect_code=0)
    assert_no_key_in(gw.process.output(), "the gateway's stdout/stderr")


@pytest.fixture
def gateway(stack: Stack) -> GatewayProcess:
    assert stack.gateway.process.alive(), stack.gateway.process.tail()
    return stack.gateway


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
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}


@pytest.fixture
async def keys(stack: Stack) -> AsyncIterator[KeyMaker]:
    gw = stack.gateway
    config = load_config(str(gw.config_path), env=gw.env)
    async with open_service(config) as service:
        yield KeyMaker(service, gw.config_path, gw.env)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that changes nothing it receives (no decompression, no redirects)."""
    async with aiohttp.ClientSession(
        auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        yield session
