"""Fixtures for the user-token tests (SPEC §11): the real OpenID provider of tests/oidc/
issuing JWT access tokens (RS256 and ES256) with signing keys the test holds too (so the
hostile tokens can be signed by the very keys the provider publishes), and real
`keygate serve` processes trusting it, in front of the echo upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey, RSAKey

from gateway.embedded import free_port
from tests.support.configs import gateway_config
from tests.support.gateway_process import UpstreamProcess
from tests.support.oidc_provider import OidcProvider, ServiceClient, running_oidc_provider

AUDIENCE = "keygate-api"
ORG = "acme"
ALICE = ServiceClient("svc-alice", "alice-secret-0123456789", ORG)
BOB = ServiceClient("svc-bob", "bob-secret-0123456789", ORG)
GHOST = ServiceClient("svc-ghost", "ghost-secret-0123456789", "no-such-org")
CLIENTS = (ALICE, BOB, GHOST)


@dataclass
class SigningKeys:
    """The provider's private keys (the first of each algorithm signs)."""

    rsa: RSAKey
    ec: ECKey
    older: list[RSAKey | ECKey] = field(default_factory=list)

    def write(self, path: Path) -> Path:
        keys = [self.rsa, self.ec, *self.older]
        path.write_text(json.dumps({"keys": [k.as_dict(private=True) for k in keys]}))
        return path


def new_keys() -> SigningKeys:
    rsa = RSAKey.generate_key(2048, {"alg": "RS256", "use": "sig"}, private=True)
    ec = ECKey.generate_key("P-256", {"alg": "ES256", "use": "sig"}, private=True)
    rsa.ensure_kid()
    ec.ensure_kid()
    return SigningKeys(rsa, ec)


@dataclass
class Idp:
    """The running provider and how to restart it (same port) with other keys."""

    logs: Path
    port: int
    keys: SigningKeys
    provider: OidcProvider | None = None
    _stack: list[Any] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> OidcProvider:
        assert self.provider is not None
        return self.provider

    def start(self, keys: SigningKeys | None = None) -> None:
        self.keys = keys or self.keys
        jwks = self.keys.write(self.logs / f"jwks-{len(self._stack)}.json")
        manager = running_oidc_provider(
            self.logs,
            [f"http://127.0.0.1:{self.port}/unused"],  # no sign-in here: tokens only
            port=self.port,
            audience=AUDIENCE,
            service_clients=CLIENTS,
            jwks_file=jwks,
            name=f"idp-{len(self._stack)}",
        )
        self.provider = manager.__enter__()
        self._stack.append(manager)

    def stop(self) -> None:
        if self._stack:
            self._stack.pop().__exit__(None, None, None)
            self.provider = None


@contextmanager
def running_idp(logs: Path) -> Iterator[Idp]:
    idp = Idp(logs, free_port(), new_keys())
    idp.start()
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[Idp]:
    """A provider per test: some tests rotate its keys or stop it."""
    with running_idp(tmp_path) as p:
        yield p


def token_config(
    upstream: UpstreamProcess, issuer: str, *, leeway: str = "5s", **sections: Any
) -> dict[str, Any]:
    """A gateway trusting `issuer` (JWKS from discovery), with a route per check."""
    echo = {"echo": {"url": upstream.url, "connect_timeout": "2s", "timeout": "10s"}}
    routes: list[dict[str, Any]] = [
        {"path": "/api/v1/sessions/**", "methods": ["GET"], "upstream": "echo", "scopes": ["read"]},
        {
            "path": "/api/v1/orgs/{org}/**",
            "upstream": "echo",
            "scopes": ["read"],
            "org_param": "org",
        },
        {"path": "/api/v1/admin/**", "upstream": "echo", "scopes": ["admin"]},
        {"path": "/api/v1/wild/**", "upstream": "echo", "scopes": ["manage:things"]},
        {
            "path": "/api/v1/limited",
            "upstream": "echo",
            "scopes": ["read"],
            "name": "limited",
            "rate_limit": {"requests": 2, "per": "1m"},
        },
        {"path": "/api/v1/events", "upstream": "echo", "websocket": True, "scopes": ["events"]},
    ]
    issuers = [
        {
            "issuer": issuer,
            "audience": AUDIENCE,
            "algorithms": ["RS256", "ES256"],
            "leeway": leeway,
        }
    ]
    server = {
        "drain_timeout": "3s",
        "store_timeout": "1s",
        # Room for the oversized token: the 8 KiB limit must be the one that refuses it.
        "max_header_field": "32KiB",
        "max_header_bytes": "64KiB",
    }
    return gateway_config(echo, routes, user_tokens=issuers, server=server, **sections)
