"""Gateway configs and environments for tests: every suite builds on these defaults.

`gateway_config` holds the sections every suite shares (cheap argon2, short intervals,
JSON logs); a suite passes its upstreams and routes and replaces whole sections it needs
otherwise. `gateway_env` is the environment of a `keygate serve` on given stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from tests.support.credentials import ROOT_TOKEN, SECRET

TEST_CONFIG = Path(__file__).parent / "keygate.test.yaml"  # the in-process CLI's config
# argon2 at its cheapest: verification costs ~1 ms, so tests measure the gateway.
CHEAP_ARGON2 = {"time_cost": 1, "memory_kib": 1024, "parallelism": 1}


class StoreUrls(Protocol):
    """Where PostgreSQL and Redis are (tests/support/stores.py, or a suite's own pair)."""

    @property
    def database_url(self) -> str: ...

    @property
    def redis_url(self) -> str: ...


def gateway_env(
    stores: StoreUrls,
    *,
    database_url: str | None = None,
    admin_token: str = ROOT_TOKEN,
    **overrides: str,
) -> dict[str, str]:
    """The KEYGATE_* environment of a gateway under test (an empty token disables the
    admin API); `overrides` replace variables by name."""
    return {
        "KEYGATE_SECRET": SECRET,
        "KEYGATE_DATABASE_URL": database_url or stores.database_url,
        "KEYGATE_REDIS_URL": stores.redis_url,
        "KEYGATE_ADMIN_TOKEN": admin_token,
        **overrides,
    }


def gateway_config(
    upstreams: dict[str, Any], routes: list[dict[str, Any]], **sections: Any
) -> dict[str, Any]:
    """A `keygate serve` config minus `listen`; `sections` replace whole top-level ones."""
    config: dict[str, Any] = {
        "dev": False,
        "keys": {"argon2": CHEAP_ARGON2, "verify_threads": 2},
        "cache": {"local_ttl": "1s"},
        "last_used": {"flush_interval": "1s"},
        "server": {"drain_timeout": "3s", "store_timeout": "1s"},
        "log": {"level": "info", "format": "json", "access_log": True},
        "upstreams": upstreams,
        "routes": routes,
    }
    config.update(sections)
    return config


def operator_config(upstream: str, dead_port: int, **sections: Any) -> dict[str, Any]:
    """The admin and observability suites' gateway: one route per outcome of SPEC §8."""
    upstreams = {
        "echo": {"url": upstream, "connect_timeout": "2s", "timeout": "10s"},
        "slow": {"url": upstream, "connect_timeout": "2s", "timeout": "300ms"},
        "dead": {"url": f"http://127.0.0.1:{dead_port}", "connect_timeout": "1s", "timeout": "2s"},
    }
    routes: list[dict[str, Any]] = [
        {"path": "/public/**", "upstream": "echo", "public": True, "name": "public"},
        {
            "path": "/api/read/**",
            "methods": ["GET"],
            "upstream": "echo",
            "scopes": ["read"],
            "name": "read",
        },
        {
            "path": "/api/orgs/{org}/**",
            "upstream": "echo",
            "scopes": ["read"],
            "org_param": "org",
            "name": "org",
        },
        {
            "path": "/api/small/**",
            "methods": ["POST"],
            "upstream": "echo",
            "scopes": ["write"],
            "max_body": "1KiB",
            "name": "small",
        },
        {
            "path": "/_demo/slow",
            "methods": ["GET"],
            "upstream": "slow",
            "scopes": ["read"],
            "name": "slow",
        },
        {"path": "/dead/**", "upstream": "dead", "scopes": ["read"], "name": "dead"},
    ]
    return gateway_config(upstreams, routes, **sections)
