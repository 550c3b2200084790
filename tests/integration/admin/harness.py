"""The operator-surface harness: gateway config, an admin API client, error and metrics checks.

Shared by the admin API tests (this folder) and the observability tests
(tests/integration/observability). Kept out of conftest.py so that every module imports one
and the same module: the session's KEYGATE_SECRET, root token and list of issued keys are
single values.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stores import Stores

SECRET = secrets.token_urlsafe(48)  # KEYGATE_SECRET of every gateway these tests start
ROOT_TOKEN = "root-" + secrets.token_urlsafe(32)
CHEAP_ARGON2 = {"time_cost": 1, "memory_kib": 1024, "parallelism": 1}
ADMIN = "/admin/v1"
KEY_FIELDS = {
    "id", "display_prefix", "org", "name", "scopes", "env", "status", "created_at",
    "created_by", "expires_at", "last_used_at", "revoked_at", "revoked_by", "revoke_reason",
    "metadata", "rolled_from", "rate_limit",
}
# Every full key (and every key-shaped string sent) this session: none may be logged.
ISSUED: list[str] = []


def unique_slug(label: str = "t") -> str:
    return f"{label[:40]}-{uuid.uuid4().hex[:10]}"


def operator_env(
    stores: Stores, *, database_url: str | None = None, admin_token: str = ROOT_TOKEN
) -> dict[str, str]:
    """The environment of a `keygate serve` under test (an empty token disables the API)."""
    return {
        "KEYGATE_SECRET": SECRET,
        "KEYGATE_DATABASE_URL": database_url or stores.database_url,
        "KEYGATE_REDIS_URL": stores.redis_url,
        "KEYGATE_ADMIN_TOKEN": admin_token,
    }


def operator_config(upstream: str, dead_port: int, **extra: Any) -> dict[str, Any]:
    """One route per outcome of SPEC §8; `extra` adds or replaces top-level sections."""
    config: dict[str, Any] = {
        "dev": False,
        "keys": {"argon2": CHEAP_ARGON2, "verify_threads": 2},
        "cache": {"local_ttl": "1s"},
        "last_used": {"flush_interval": "1s"},
        "server": {"drain_timeout": "3s", "store_timeout": "1s"},
        "log": {"level": "info", "format": "json", "access_log": True},
        "upstreams": {
            "echo": {"url": upstream, "connect_timeout": "2s", "timeout": "10s"},
            "slow": {"url": upstream, "connect_timeout": "2s", "timeout": "300ms"},
            "dead": {"url": f"http://127.0.0.1:{dead_port}", "connect_timeout": "1s",
                     "timeout": "2s"},
        },
        "routes": [
            {"path": "/public/**", "upstream": "echo", "public": True, "name": "public"},
            {"path": "/api/read/**", "methods": ["GET"], "upstream": "echo",
             "scopes": ["read"], "name": "read"},
            {"path": "/api/orgs/{org}/**", "upstream": "echo", "scopes": ["read"],
             "org_param": "org", "name": "org"},
            {"path": "/api/small/**", "methods": ["POST"], "upstream": "echo",
             "scopes": ["write"], "max_body": "1KiB", "name": "small"},
            {"path": "/_demo/slow", "methods": ["GET"], "upstream": "slow", "scopes": ["read"],
             "name": "slow"},
            {"path": "/dead/**", "upstream": "dead", "scopes": ["read"], "name": "dead"},
        ],
    }
    config.update(extra)
    return config


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def body(self) -> Any:
        return json.loads(self.text)

    def ok(self, status: int = 200) -> Any:
        assert self.status == status, f"expected {status}, got {self.status}: {self.text}"
        return self.body


def assert_error(reply: Reply, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The JSON error shape of SPEC §3 (the admin API adds `field` for invalid input)."""
    assert reply.status == status, f"expected {status} {code}, got {reply.status}: {reply.text}"
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply.headers
    assert reply.headers.get("Cache-Control") == "no-store", reply.headers
    body = reply.body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) - {"field"} == {"code", "message", "request_id"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["request_id"] == reply.headers.get("X-Request-Id"), (error, reply.headers)
    if field is not None:
        assert error.get("field") == field, error
    return error


class AdminClient:
    """Real HTTP calls to one gateway's admin listener, with one bearer credential."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        self.session = session
        self.base_url = base_url
        self.token = token

    def as_(self, token: str | None) -> AdminClient:
        return AdminClient(self.session, self.base_url, token)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        sent: dict[str, str] = {}
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        data: bytes | str | None = raw
        if body is not None:
            data = json.dumps(body)
        if data is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        own = path.startswith(("/admin/", "/healthz", "/readyz", "/metrics"))
        url = self.base_url + (path if own else ADMIN + path)
        async with self.session.request(method, url, data=data, headers=sent,
                                        params=params) as response:
            return Reply(response.status, response.headers, await response.text())

    async def create_org(self, label: str = "t") -> str:
        slug = unique_slug(label)
        (await self.call("POST", "/orgs", {"slug": slug})).ok(201)
        return slug

    async def create_key(self, org: str, scopes: Iterable[str], **fields: Any) -> dict[str, Any]:
        """`{"key": key, "secret": full key}`; the full key is remembered in ISSUED."""
        body = {"name": fields.pop("name", "test key"), "scopes": list(scopes), **fields}
        created: dict[str, Any] = (await self.call("POST", f"/orgs/{org}/keys", body)).ok(201)
        ISSUED.append(created["secret"])
        return created

    async def audit(self, org: str, **params: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (
            await self.call("GET", f"/orgs/{org}/audit", params=params)
        ).ok()["items"]
        return items


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by (sample name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


async def scrape(session: aiohttp.ClientSession, admin_url: str) -> Samples:
    async with session.get(admin_url + "/metrics") as response:
        assert response.status == 200, await response.text()
        return parse_metrics(await response.text())


def moved(before: Samples, after: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples named `name` whose value changed, with the change."""
    changes = {}
    for (sample, labels), value in after.items():
        if sample == name:
            delta = value - before.get((sample, labels), 0.0)
            if delta:
                changes[labels] = delta
    return changes


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def assert_no_key_in(output: str, where: str) -> None:
    """No key issued in this session appears in `output` (a process's logs, say)."""
    leaked = [k[:12] + "…" for k in ISSUED if k in output]
    assert not leaked, f"full API keys found in {where}: {leaked}"
