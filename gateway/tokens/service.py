"""Revoking a person's user tokens (SPEC §11): the rules, in one place for the CLI and the
admin API.

`revoke(actor, org, subject, issuer)` records that `subject`'s tokens for `org` (from
`issuer`, or from any issuer) issued up to now are refused, with its audit entry in the
same transaction. PostgreSQL announces the committed change to every gateway (migration
0006); the writer also publishes it on Redis, and a Redis it cannot reach is a warning,
not a failure (the revocation is durable and heard through PostgreSQL).

Who may: root and the CLI; a person who is an owner or admin of the org (as for its keys);
an API key with `keys:manage` inside its own org. Permission is checked before the org is
looked up, and another org does not exist for a person or a key outside it (404).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.config import Config
from gateway.keys import audit
from gateway.keys.errors import Forbidden, InvalidInput, NotFound
from gateway.keys.models import Actor, rfc3339, utcnow
from gateway.keys.scopes import grants
from gateway.keys.service import KEY_ROLES, MANAGE_SCOPE
from gateway.store import queries
from gateway.store import token_revocations as store
from gateway.store.db import Database
from gateway.store.key_cache import RedisKeyCache
from gateway.store.token_revocations import ANY_ISSUER, TokenRevocation

log = logging.getLogger("keygate.service")

MAX_SUBJECT = 255
Publisher = Callable[[TokenRevocation], Awaitable[None]]


@dataclass(frozen=True)
class RevokedTokens:
    revocation: TokenRevocation
    warnings: tuple[str, ...] = ()  # what did not go as usual (the revocation is durable)

    def to_json(self) -> dict[str, Any]:
        """The admin API's and `--json`'s object."""
        r = self.revocation
        return {
            "org": r.org,
            "subject": r.subject,
            "issuer": r.issuer or None,
            "revoked_before": rfc3339(store.utc(r.before)),
            "revoked_by": r.revoked_by,
        }


class TokenService:
    def __init__(
        self,
        db: Database,
        issuers: tuple[str, ...],
        *,
        publish: Publisher | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.issuers = issuers  # the configured user_tokens issuers
        self.publish = publish
        self.clock = clock

    async def revoke(
        self, actor: Actor, org: str, subject: object, issuer: object = None
    ) -> RevokedTokens:
        """Refuse `subject`'s tokens for `org` issued up to now; audited in `org`."""
        _check_permission(actor, org)
        subject = _check_subject(subject)
        chosen = self._check_issuer(issuer)
        now = self.clock()
        async with self.db.transaction() as conn:
            if not isinstance(org, str) or await queries.get_org(conn, org) is None:
                raise NotFound(f"unknown org {org!r}", "org")
            revocation = await store.revoke(conn, org, chosen, subject, now, actor.principal)
            await audit.record(
                conn,
                actor,
                now,
                "user_token.revoke",
                org,
                details={"subject": subject, "issuer": chosen or None},
            )
        return RevokedTokens(revocation, await self._published(revocation))

    def _check_issuer(self, issuer: object) -> str:
        if issuer is None:
            return ANY_ISSUER
        if not isinstance(issuer, str) or not issuer:
            raise InvalidInput("issuer must be a non-empty string", "issuer")
        if issuer not in self.issuers:
            known = ", ".join(self.issuers) or "none are configured"
            raise InvalidInput(
                f"issuer {issuer[:200]!r} is not a configured user_tokens issuer ({known})",
                "issuer",
            )
        return issuer

    async def _published(self, revocation: TokenRevocation) -> tuple[str, ...]:
        if self.publish is None:
            return ()
        try:
            await self.publish(revocation)
        except (TimeoutError, RedisError, OSError) as exc:
            return (
                f"Redis unreachable ({type(exc).__name__}): the revocation is durable in "
                "PostgreSQL; gateways hear it through PostgreSQL (LISTEN/NOTIFY) within 1 s",
            )
        return ()


def issuer_names(config: Config) -> tuple[str, ...]:
    return tuple(i.issuer for i in config.user_tokens)


def _check_permission(actor: Actor, org: str) -> None:
    if actor.is_root:
        return
    if actor.is_person:
        role = actor.role_in(org)
        if role is None:
            raise NotFound(f"unknown org {org!r}", "org")
        if role not in KEY_ROLES:
            raise Forbidden(
                f"your role in org {org!r} is {role}; revoking user tokens needs owner or admin"
            )
        return
    if not any(grants(held, MANAGE_SCOPE) for held in actor.scopes):
        raise Forbidden(f"the acting key needs the {MANAGE_SCOPE} scope")
    if actor.org != org:
        raise NotFound(f"unknown org {org!r}", "org")


def _check_subject(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput("subject must be a non-empty string (the tokens' sub claim)", "subject")
    if len(value) > MAX_SUBJECT or not (value.isascii() and value.isprintable()):
        raise InvalidInput(
            f"subject must be at most {MAX_SUBJECT} printable ASCII characters "
            "(gateways accept no other sub claim)",
            "subject",
        )
    return value


def redis_publisher(client: aioredis.Redis) -> Publisher:
    """Publish revocations on Redis through `client` (the gateway's, or the CLI's)."""

    async def publish(revocation: TokenRevocation) -> None:
        await store.publish(client, revocation)

    return publish


@contextlib.asynccontextmanager
async def open_token_service(config: Config) -> AsyncIterator[TokenService]:
    """The service as the CLI uses it: its own pool, and revocations published on Redis
    whenever it is reachable."""
    db = Database(config.database_url, timeout=config.server.store_timeout)
    cache = RedisKeyCache.connect(config.redis_url, config.cache.redis_ttl, timeout=2.0)
    try:
        yield TokenService(db, issuer_names(config), publish=redis_publisher(cache.client))
    finally:
        await cache.close()
        await db.close()
