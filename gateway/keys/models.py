"""Plain records of the domain: orgs, keys, audit entries, and who acts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.keys.rate_limits import RateLimit

STATUSES = ("active", "expired", "revoked")


@dataclass(frozen=True)
class Org:
    slug: str
    name: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"slug": self.slug, "name": self.name, "created_at": rfc3339(self.created_at)}


@dataclass(frozen=True)
class ApiKey:
    """A stored key: everything but the secret. `secret_hash` never leaves the service."""

    id: str
    org: str
    name: str
    prefix: str
    env: str
    scopes: tuple[str, ...]
    metadata: dict[str, Any]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    rolled_from: str | None
    version: int
    rate_limit: RateLimit | None = None  # counted per key over every route
    secret_hash: str = field(repr=False, default="")

    @property
    def display_prefix(self) -> str:
        return self.prefix + self.id

    def status(self, now: datetime) -> str:
        """Derived from revoked_at, expires_at and the clock: never stored."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_json(self, now: datetime) -> dict[str, Any]:
        """The `key` object of the spec (§6), shared by the admin API and `--json`."""
        return {
            "id": self.id,
            "display_prefix": self.display_prefix,
            "org": self.org,
            "name": self.name,
            "scopes": list(self.scopes),
            "env": self.env,
            "status": self.status(now),
            "created_at": rfc3339(self.created_at),
            "created_by": self.created_by,
            "expires_at": rfc3339(self.expires_at),
            "last_used_at": rfc3339(self.last_used_at),
            "revoked_at": rfc3339(self.revoked_at),
            "revoked_by": self.revoked_by,
            "revoke_reason": self.revoke_reason,
            "metadata": self.metadata,
            "rolled_from": self.rolled_from,
            "rate_limit": None if self.rate_limit is None else self.rate_limit.to_json(),
        }


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    org: str
    key_id: str | None
    action: str
    principal: str
    old_scopes: tuple[str, ...] | None
    new_scopes: tuple[str, ...] | None
    client_ip: str | None
    request_id: str | None
    traceparent: str | None
    details: dict[str, Any]
    user_agent: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": rfc3339(self.at),
            "org": self.org,
            "key_id": self.key_id,
            "action": self.action,
            "principal": self.principal,
            "old_scopes": None if self.old_scopes is None else list(self.old_scopes),
            "new_scopes": None if self.new_scopes is None else list(self.new_scopes),
            "client_ip": self.client_ip,
            "request_id": self.request_id,
            "traceparent": self.traceparent,
            "user_agent": self.user_agent,
            "details": self.details,
        }


@dataclass(frozen=True)
class Actor:
    """Who performs an admin action and from where (recorded in the audit log).

    Three kinds, told apart by `kind`, never by one field alone:

      root    the root token, the CLI (`cli:<os user>`) and `keygate dev`: no limits
      key     an API key acting inside its own `org`, bounded by what its key holds —
              scopes, env, expiry, rate limit (gateway/keys/ceiling.py)
      person  someone signed in to the console (`user:<email>`) with `roles` per org

    A person never has `org` set and a key never has `roles`, so no person can fall into
    the root branch of a permission check, and no key into the person branch.
    """

    principal: str
    org: str | None = None  # set for API-key principals: they act inside this org only
    scopes: tuple[str, ...] = ()
    env: str | None = None
    expires_at: datetime | None = None
    rate_limit: RateLimit | None = None
    client_ip: str | None = None
    request_id: str | None = None
    traceparent: str | None = None
    roles: Mapping[str, str] | None = None  # set for persons only: org slug -> role
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if self.roles is not None and self.org is not None:
            raise ValueError("an actor is a key (org) or a person (roles), never both")
        if self.roles is not None and not self.principal.startswith("user:"):
            raise ValueError("a person's principal is user:<email>")

    @property
    def kind(self) -> Literal["root", "key", "person"]:
        if self.roles is not None:
            return "person"
        if self.org is not None:
            return "key"
        return "root"

    @property
    def is_key(self) -> bool:
        """An API key acting inside its org: bound by its own ceiling."""
        return self.kind == "key"

    @property
    def is_person(self) -> bool:
        """A person signed in to the console: acts by their role in each org."""
        return self.kind == "person"

    @property
    def is_root(self) -> bool:
        """The root token, the CLI or `keygate dev`: every org, no ceiling."""
        return self.kind == "root"

    def role_in(self, org: str) -> str | None:
        """A person's role in `org` (None: not a member, or not a person)."""
        return None if self.roles is None else self.roles.get(org)


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def utcnow() -> datetime:
    return datetime.now(UTC)
