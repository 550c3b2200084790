"""Orgs and keys made through the real service, as the tests hold them."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.config import load_config
from gateway.keys.format import BASE62, base62_checksum
from gateway.keys.models import Actor
from gateway.keys.service import KeyService, open_key_service
from tests.support.cli import CliResult, run_keygate
from tests.support.credentials import issued

ACTOR = Actor(principal="test:harness")


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


def unknown_key() -> str:
    """A well-formed key whose id exists nowhere."""
    body = "kg_live_" + "".join(secrets.choice(BASE62) for _ in range(40))
    return body + base62_checksum(body)


class KeyMaker:
    """Orgs and keys with unique names through the real service (which publishes changes
    on Redis), and the real `keygate` CLI on a gateway's config."""

    def __init__(self, service: KeyService, config_path: Path, env: Mapping[str, str]) -> None:
        self.service = service
        self.config_path = config_path
        self.env = dict(env)

    async def org(self, label: str = "t") -> str:
        slug = f"{label[:40]}-{uuid.uuid4().hex[:10]}"
        await self.service.create_org(ACTOR, slug)
        return slug

    async def key(
        self,
        scopes: Sequence[str] = ("read",),
        *,
        org: str | None = None,
        env: str = "live",
        expires_in: float | None = None,
    ) -> MadeKey:
        org = org or await self.org()
        created = await self.service.create_key(
            ACTOR, org, "test key", list(scopes), env=env, expires_in=expires_in
        )
        issued(created.secret)
        k = created.key
        return MadeKey(
            created.secret, k.id, k.display_prefix, k.org, tuple(k.scopes), k.env, k.expires_at
        )

    async def revoke(self, key_id: str) -> None:
        await self.service.revoke_key(ACTOR, key_id, reason="test")

    async def cli(self, *args: str) -> CliResult:
        """`keygate ARGS…` in a subprocess on this gateway's config and environment."""
        return await run_keygate(self.config_path, self.env, *args)

    async def cli_ok(self, *args: str) -> str:
        """Like `cli`, requiring exit 0; returns stdout."""
        run = await self.cli(*args)
        assert run.code == 0, f"keygate {' '.join(args)}: {run.err}"
        return run.out


@asynccontextmanager
async def key_maker(config_path: Path, env: Mapping[str, str]) -> AsyncIterator[KeyMaker]:
    """A KeyMaker on the stores a gateway's config and environment name."""
    config = load_config(str(config_path), env=dict(env))
    async with open_key_service(config) as service:
        yield KeyMaker(service, config_path, env)
