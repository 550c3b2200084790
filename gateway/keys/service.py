"""The key service: the one place where the rules for orgs, keys and audit live.

The CLI, the admin API and the tests all call this; it calls the store's query functions
inside one transaction per action, so an action and its audit entry commit together.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from gateway.config import Config, KeysConfig
from gateway.keys import audit, ceiling
from gateway.keys import format as key_format
from gateway.keys.errors import Conflict, Forbidden, InvalidInput, NotFound
from gateway.keys.hashing import SecretHasher
from gateway.keys.models import Actor, ApiKey, AuditEntry, Org, utcnow
from gateway.keys.rate_limits import RateLimit, RateLimitError, from_mapping, from_text
from gateway.keys.scopes import ScopeCatalogue, ScopeError, grants, normalise_scopes
from gateway.store import queries
from gateway.store.db import Connection, Database
from gateway.store.key_cache import KeyCacheWriter

log = logging.getLogger("keygate.service")

SLUG = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
MAX_NAME = 200
MAX_METADATA_BYTES = 8192
MAX_PAGE = 1000
DEFAULT_GRACE = 86400.0
MAX_LIFETIME = 100 * 365 * 86400.0  # beyond this, datetimes overflow soon enough
# Told of every change after commit; returns a warning when a cache tier missed it.
KeyListener = Callable[[ApiKey], Awaitable[str | None]]


class Keep(enum.Enum):
    """`update_key(rate_limit=KEEP)`: leave it as it is (None would remove it)."""

    KEEP = "keep"


KEEP = Keep.KEEP
# What callers may pass as a rate limit: a RateLimit, its text form "100/1m", its JSON
# form {"requests": 100, "per": "1m"}, or None for no limit. Checked by the service.
RateLimitInput = RateLimit | str | Mapping[str, Any] | None


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # the full key: shown once, never stored

    def __repr__(self) -> str:
        return f"CreatedKey(key={self.key.display_prefix!r})"


@dataclass(frozen=True)
class RolledKey:
    key: ApiKey
    secret: str
    previous: ApiKey
    warnings: tuple[str, ...] = ()  # what did not go as usual (the change is durable)

    def __repr__(self) -> str:
        return (
            f"RolledKey(key={self.key.display_prefix!r}, previous={self.previous.display_prefix!r})"
        )


@dataclass(frozen=True)
class RevokedKey:
    key: ApiKey
    already: bool  # it was revoked before this call: nothing changed, nothing audited
    warnings: tuple[str, ...] = ()  # what did not go as usual (the revocation is durable)


@dataclass(frozen=True)
class UpdatedKey:
    key: ApiKey
    warnings: tuple[str, ...] = ()  # what did not go as usual (the change is durable)


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


class KeyService:
    """Org, key and audit operations with their rules and audit entries."""

    def __init__(
        self,
        db: Database,
        keys: KeysConfig,
        hasher: SecretHasher,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_change: KeyListener | None = None,
        scope_catalogue: ScopeCatalogue | None = None,
    ) -> None:
        self.db = db
        self.keys = keys
        self.scope_catalogue = scope_catalogue  # None: any well-formed scope is accepted
        self.hasher = hasher
        self.clock = clock
        self.on_change = on_change

    # --- orgs -----------------------------------------------------------------------

    async def create_org(self, actor: Actor, slug: str, name: str | None = None) -> Org:
        if not actor.is_root:  # neither keys nor persons, whatever their role
            raise Forbidden("only the root admin can create organisations")
        if not isinstance(slug, str) or not SLUG.fullmatch(slug):
            raise InvalidInput(
                f"invalid org slug {slug!r}: "
                "use 2-63 of a-z 0-9 '-', starting with a letter or digit",
                "slug",
            )
        name = _check_name(name if name is not None else slug, "name")
        now = self.clock()
        async with self.db.transaction() as conn:
            if await queries.get_org(conn, slug) is not None:
                raise Conflict(f"org {slug!r} already exists", "slug")
            try:
                org = await queries.insert_org(conn, slug, name, now)
            except queries.UniqueViolation:
                raise Conflict(f"org {slug!r} already exists", "slug") from None
            await self._audit(conn, actor, now, "org.create", slug, None, details={"name": name})
        return org

    async def list_orgs(self, actor: Actor) -> list[Org]:
        """Every org for root; for a key with keys:read or keys:manage, its own org only;
        for a person, the orgs they have a role in."""
        if not actor.is_person:
            _check_permission(actor, write=False)
        async with self.db.connection() as conn:
            orgs = await queries.list_orgs(conn)
        if actor.is_key:
            return [o for o in orgs if o.slug == actor.org]
        if actor.is_person:
            return [o for o in orgs if actor.role_in(o.slug) is not None]
        return orgs

    # --- keys -----------------------------------------------------------------------

    async def create_key(
        self,
        actor: Actor,
        org: str,
        name: str,
        scopes: list[str],
        *,
        env: str = "live",
        expires_in: float | None = None,
        expires_at: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
        rate_limit: RateLimitInput = None,
    ) -> CreatedKey:
        self._check_org_access(actor, org, write=True)
        name = _check_name(name, "name")
        clean_scopes = self._check_scopes(actor, scopes)
        if env not in self.keys.prefixes:
            raise InvalidInput(f"invalid env {env!r}: use live or test", "env")
        ceiling.check_new_env(actor, env)
        meta = _check_metadata(metadata)
        limit = check_rate_limit(rate_limit)
        ceiling.check_new_rate_limit(actor, limit, "creates")
        now = self.clock()
        expiry = _expiry(now, expires_in, expires_at)
        ceiling.check_new_expiry(actor, expiry, _expiry_field(expires_in), "creates")
        async with self.db.transaction() as conn:
            await self._require_org(conn, org)
            created = await self._insert_new_key(
                conn,
                actor,
                now,
                org,
                name,
                clean_scopes,
                env,
                expiry,
                meta,
                limit,
                rolled_from=None,
            )
            await self._audit(
                conn,
                actor,
                now,
                "key.create",
                org,
                created.key.id,
                new_scopes=clean_scopes,
                details={
                    "name": name,
                    "env": env,
                    "expires_at": _iso(expiry),
                    **({"rate_limit": limit.to_json()} if limit else {}),
                },
            )
        # Announced like any change: a gateway that cached its id's range as holding no
        # key (auth.unknown_ids) accepts it at once. PostgreSQL announces it too (0007),
        # so a warning (Redis unreachable) changes nothing for the caller.
        await self._changed(created.key)
        return created

    async def list_keys(
        self,
        actor: Actor,
        org: str,
        *,
        status: str = "all",
        search: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """A page of `org`'s keys, newest first; `search` keeps those whose name contains
        it (any case) or whose display prefix or id starts with it."""
        self._check_org_access(actor, org)
        if status not in ("all", "active", "expired", "revoked"):
            raise InvalidInput(
                f"invalid status {status!r}: use active, revoked, expired or all", "status"
            )
        if search is not None:
            search = search.strip()
            if len(search) > MAX_NAME or _has_nul(search):
                raise InvalidInput(f"q must be at most {MAX_NAME} characters of text", "q")
        limit = _check_limit(limit)
        after = _decode_key_cursor(cursor) if cursor else None
        now = self.clock()
        async with self.db.connection() as conn:
            await self._require_org(conn, org)
            items = await queries.list_keys(
                conn, org, status, now, limit + 1, after, search=search or None
            )
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            last = items[-1]
            next_cursor = _encode_cursor({"c": last.created_at.isoformat(), "i": last.id})
        return Page(items, next_cursor)

    async def get_key(self, actor: Actor, ref: str, *, org: str | None = None) -> ApiKey:
        _check_permission(actor, write=False, org=org)
        async with self.db.connection() as conn:
            return await self._find_key(conn, actor, ref, org)

    async def find_presented_key(
        self, actor: Actor, parsed: key_format.ParsedKey
    ) -> tuple[ApiKey, bool] | None:
        """The stored key a full key names and whether its secret matches (`keys verify`);
        None when no such key is visible to `actor`."""
        try:
            key = await self.get_key(actor, parsed.display_prefix)
        except NotFound:
            return None
        return key, await self.hasher.verify_async(key.secret_hash, parsed.secret)

    async def update_key(
        self,
        actor: Actor,
        ref: str,
        *,
        name: str | None = None,
        scopes: list[str] | None = None,
        rate_limit: RateLimitInput | Literal[Keep.KEEP] = KEEP,
        org: str | None = None,
    ) -> UpdatedKey:
        _check_permission(actor, write=True, org=org)
        if name is None and scopes is None and rate_limit is KEEP:
            raise InvalidInput("nothing to update: give a new name, scopes and/or rate limit")
        new_name = _check_name(name, "name") if name is not None else None
        new_scopes = self._check_scopes(actor, scopes) if scopes is not None else None
        new_limit = KEEP if rate_limit is KEEP else check_rate_limit(rate_limit)
        if new_limit is not KEEP:
            # Its own limit too: a key can tighten itself, never loosen or remove.
            ceiling.check_new_rate_limit(actor, new_limit, "updates")
        now = self.clock()
        async with self.db.transaction() as conn:
            old = await self._find_key(conn, actor, ref, org, for_update=True)
            ceiling.check_target(actor, old, "update")
            key = await queries.update_key(
                conn,
                old.id,
                new_name or old.name,
                new_scopes if new_scopes is not None else old.scopes,
                old.rate_limit if new_limit is KEEP else new_limit,
            )
            scopes_changed = key.scopes != old.scopes
            details: dict[str, Any] = {}
            if key.name != old.name:
                details.update(old_name=old.name, new_name=key.name)
            if key.rate_limit != old.rate_limit:
                details.update(
                    old_rate_limit=_limit_json(old.rate_limit),
                    new_rate_limit=_limit_json(key.rate_limit),
                )
            await self._audit(
                conn,
                actor,
                now,
                "key.update",
                key.org,
                key.id,
                old_scopes=old.scopes if scopes_changed else None,
                new_scopes=key.scopes if scopes_changed else None,
                details=details,
            )
        return UpdatedKey(key, await self._changed(key))

    async def revoke_key(
        self, actor: Actor, ref: str, *, reason: str | None = None, org: str | None = None
    ) -> RevokedKey:
        """Revoke now. Idempotent: a revoked key is returned as it is, with no audit entry
        (its first reason, time and principal stay)."""
        _check_permission(actor, write=True, org=org)
        if reason is not None:
            reason = _check_name(reason, "reason")
        now = self.clock()
        async with self.db.transaction() as conn:
            old = await self._find_key(conn, actor, ref, org, for_update=True)
            ceiling.check_target(actor, old, "revoke")
            if old.revoked_at is not None:
                return RevokedKey(old, already=True)
            key = await queries.revoke_key(conn, old.id, now, actor.principal, reason)
            await self._audit(
                conn, actor, now, "key.revoke", key.org, key.id, details={"reason": reason}
            )
        return RevokedKey(key, already=False, warnings=await self._changed(key))

    async def roll_key(
        self,
        actor: Actor,
        ref: str,
        *,
        grace: float = DEFAULT_GRACE,
        expires_in: float | None = None,
        expires_at: datetime | None = None,
        org: str | None = None,
    ) -> RolledKey:
        """Issue a replacement key; the old one expires after `grace` (0: revoked now).

        Without an expiry the new key gets the old one's lifetime counted from now, cut at
        the acting key's own expiry; an explicit expiry beyond that is refused.
        """
        _check_permission(actor, write=True, org=org)
        if grace < 0:
            raise InvalidInput("grace cannot be negative", "grace")
        if grace > MAX_LIFETIME:
            raise InvalidInput("grace must be at most 100 years", "grace")
        now = self.clock()
        async with self.db.transaction() as conn:
            old = await self._find_key(conn, actor, ref, org, for_update=True)
            ceiling.check_target(actor, old, "roll")
            if old.revoked_at is not None:
                raise Conflict(
                    f"key {old.display_prefix} is revoked; a revoked key cannot be rolled"
                )
            if expires_in is None and expires_at is None and old.expires_at is not None:
                inherited = now + (old.expires_at - old.created_at)
                expiry: datetime | None = (
                    inherited if actor.expires_at is None else min(inherited, actor.expires_at)
                )
            else:
                expiry = _expiry(now, expires_in, expires_at)
                ceiling.check_new_expiry(actor, expiry, _expiry_field(expires_in), "rolls")
            created = await self._insert_new_key(
                conn,
                actor,
                now,
                old.org,
                old.name,
                old.scopes,
                old.env,
                expiry,
                old.metadata,
                old.rate_limit,
                rolled_from=old.id,
            )
            if grace == 0:
                previous = await queries.revoke_key(conn, old.id, now, actor.principal, "rolled")
            else:
                old_expiry = now + timedelta(seconds=grace)
                if old.expires_at is not None:
                    old_expiry = min(old_expiry, old.expires_at)
                previous = await queries.set_key_expiry(conn, old.id, old_expiry)
            await self._audit(
                conn,
                actor,
                now,
                "key.roll",
                old.org,
                old.id,
                details={
                    "new_key_id": created.key.id,
                    "grace_seconds": grace,
                    "old_expires_at": _iso(previous.expires_at),
                },
            )
            await self._audit(
                conn,
                actor,
                now,
                "key.create",
                old.org,
                created.key.id,
                new_scopes=created.key.scopes,
                details={
                    "rolled_from": old.id,
                    **({"rate_limit": old.rate_limit.to_json()} if old.rate_limit else {}),
                },
            )
        await self._changed(created.key)  # the new key, as create_key does
        return RolledKey(created.key, created.secret, previous, await self._changed(previous))

    # --- audit ----------------------------------------------------------------------

    async def list_audit(
        self,
        actor: Actor,
        org: str,
        *,
        key_id: str | None = None,
        action: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        self._check_org_access(actor, org)
        limit = _check_limit(limit)
        before = _decode_audit_cursor(cursor) if cursor else None
        if key_id is not None:
            try:
                key_id = key_format.split_key_reference(key_id)[1]
            except key_format.MalformedKey as exc:
                raise InvalidInput(str(exc), "key_id") from None
        async with self.db.connection() as conn:
            await self._require_org(conn, org)
            items: list[AuditEntry] = await queries.list_audit(
                conn, org, key_id=key_id, action=action, limit=limit + 1, before_id=before
            )
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            next_cursor = _encode_cursor({"b": items[-1].id})
        return Page(items, next_cursor)

    # --- internals ------------------------------------------------------------------

    def _check_org_access(self, actor: Actor, org: str, *, write: bool = False) -> None:
        _check_permission(actor, write=write, org=org)  # first: no lookup before the refusal
        if actor.is_key and actor.org != org:
            # Another org's resources do not exist for this principal.
            raise NotFound(f"unknown org {org!r}", "org")

    def _check_scopes(self, actor: Actor, scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        if not isinstance(scopes, list | tuple):
            raise InvalidInput("scopes must be a list of strings", "scopes")
        try:
            clean = normalise_scopes(scopes)
            if self.scope_catalogue is not None:  # a typo must not become a granted scope
                self.scope_catalogue.check(clean)
        except ScopeError as exc:
            raise InvalidInput(str(exc), "scopes") from None
        ceiling.check_new_scopes(actor, clean)
        return clean

    async def _require_org(self, conn: Connection, org: str) -> None:
        if not isinstance(org, str) or await queries.get_org(conn, org) is None:
            raise NotFound(f"unknown org {org!r}", "org")

    async def _find_key(
        self,
        conn: Connection,
        actor: Actor,
        ref: str,
        org: str | None,
        *,
        for_update: bool = False,
    ) -> ApiKey:
        try:
            prefix, key_id = key_format.split_key_reference(ref)
        except key_format.MalformedKey as exc:
            raise InvalidInput(str(exc), "key_id") from None
        key = await queries.get_key(conn, key_id, for_update=for_update)
        hidden = key is not None and (
            (prefix is not None and key.prefix != prefix)
            or (actor.is_key and key.org != actor.org)
            or (actor.is_person and actor.role_in(key.org) is None)
            or (org is not None and key.org != org)
        )
        if key is None or hidden:
            raise NotFound(f"unknown key {ref!r}", "key_id")
        if actor.is_person:  # by reference alone (no org given): the key's org decides
            _check_person(actor, key.org)
        return key

    async def _insert_new_key(
        self,
        conn: Connection,
        actor: Actor,
        now: datetime,
        org: str,
        name: str,
        scopes: tuple[str, ...],
        env: str,
        expiry: datetime | None,
        metadata: dict[str, Any],
        rate_limit: RateLimit | None,
        *,
        rolled_from: str | None,
    ) -> CreatedKey:
        prefix = self.keys.prefixes[env]
        for _attempt in range(5):
            full, parts = key_format.generate_key(prefix)
            draft = ApiKey(
                id=parts.key_id,
                org=org,
                name=name,
                prefix=prefix,
                env=env,
                scopes=scopes,
                metadata=metadata,
                created_at=now,
                created_by=actor.principal,
                expires_at=expiry,
                last_used_at=None,
                revoked_at=None,
                revoked_by=None,
                revoke_reason=None,
                rolled_from=rolled_from,
                version=1,
                rate_limit=rate_limit,
                secret_hash=await self.hasher.hash_async(parts.secret),
            )
            try:
                async with conn.transaction():  # savepoint: an id collision can be retried
                    key = await queries.insert_key(conn, draft)
            except queries.UniqueViolation:
                continue
            return CreatedKey(key, full)
        raise Conflict("could not allocate a unique key id; try again")

    async def _audit(
        self,
        conn: Connection,
        actor: Actor,
        now: datetime,
        action: str,
        org: str,
        key_id: str | None,
        *,
        old_scopes: tuple[str, ...] | None = None,
        new_scopes: tuple[str, ...] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        await audit.record(
            conn,
            actor,
            now,
            action,
            org,
            key_id=key_id,
            old_scopes=old_scopes,
            new_scopes=new_scopes,
            details=details,
        )

    async def _changed(self, key: ApiKey) -> tuple[str, ...]:
        """Tell the caches after commit; the change itself is already durable, and
        PostgreSQL announced it to every gateway on commit. Returns warnings to show."""
        if self.on_change is None:
            return ()
        try:
            warning = await self.on_change(key)
        except Exception as exc:
            log.warning("could not publish the change of key %s", key.display_prefix, exc_info=True)
            warning = (
                f"the change could not be published ({type(exc).__name__}); gateways"
                " hear it through PostgreSQL within 1 s"
            )
        return () if warning is None else (warning,)


MANAGE_SCOPE = "keys:manage"
READ_SCOPE = "keys:read"


KEY_ROLES = ("owner", "admin")  # the roles that see and manage an org's keys (SPEC §10)


def _check_permission(actor: Actor, *, write: bool, org: str | None = None) -> None:
    """Root may do anything. API-key principals need keys:manage to change keys,
    keys:read (or manage) to read. Persons need the owner or admin role in `org`.

    Every action calls this before it looks anything up, so the refusal is the same
    whether or not the org or key exists. A person acting on a key by reference alone
    (no org given) is checked against the key's org once it is found (`_find_key`).
    """
    if actor.is_person:
        if org is not None:
            _check_person(actor, org)
        return
    if actor.is_root:
        return
    needed = (MANAGE_SCOPE,) if write else (MANAGE_SCOPE, READ_SCOPE)
    if not any(grants(held, want) for held in actor.scopes for want in needed):
        raise Forbidden(f"the acting key needs the {' or '.join(needed)} scope")


def _check_person(actor: Actor, org: str) -> None:
    """A person's access to `org`'s keys and audit log: an org they are not in does not
    exist for them (404, as another org's resources for a key); a `member` is refused."""
    role = actor.role_in(org)
    if role is None:
        raise NotFound(f"unknown org {org!r}", "org")
    if role not in KEY_ROLES:
        raise Forbidden(
            f"your role in org {org!r} is {role}; API keys and the audit log need owner or admin"
        )


def _check_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} must be a non-empty string", field)
    if len(value) > MAX_NAME:
        raise InvalidInput(f"{field} is longer than {MAX_NAME} characters", field)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput(f"{field} cannot contain control characters", field)
    return value.strip()


def _check_metadata(value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput("metadata must be a JSON object", "metadata")
    try:
        encoded = json.dumps(dict(value))
    except (TypeError, ValueError):
        raise InvalidInput("metadata must be JSON-serialisable", "metadata") from None
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes", "metadata")
    result: dict[str, Any] = json.loads(encoded)
    if _has_nul(result):  # Postgres jsonb cannot store U+0000
        raise InvalidInput("metadata cannot contain the NUL character (\\u0000)", "metadata")
    return result


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def check_rate_limit(value: RateLimitInput) -> RateLimit | None:
    """A key's rate limit from any of its written forms; InvalidInput names the field."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return from_text(value)
        # A RateLimit built by a caller is checked like its JSON form.
        return from_mapping(value.to_json() if isinstance(value, RateLimit) else value)
    except RateLimitError as exc:
        where = "rate_limit" if exc.field is None else f"rate_limit.{exc.field}"
        raise InvalidInput(f"invalid {where}: {exc.message}", "rate_limit") from None


def _limit_json(limit: RateLimit | None) -> dict[str, Any] | None:
    return None if limit is None else limit.to_json()


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_PAGE}", "limit")
    return limit


def _expiry(
    now: datetime, expires_in: float | None, expires_at: datetime | None
) -> datetime | None:
    if expires_in is not None and expires_at is not None:
        raise InvalidInput("give expires_in or expires_at, not both", "expires_at")
    if expires_in is not None:
        if expires_in <= 0:
            raise InvalidInput("expires_in must be longer than 0s", "expires_in")
        if expires_in > MAX_LIFETIME:
            raise InvalidInput("expires_in must be at most 100 years", "expires_in")
        return now + timedelta(seconds=expires_in)
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidInput(
                "expires_at needs a time zone, for example 2030-01-01T00:00:00Z", "expires_at"
            )
        if expires_at <= now:
            raise InvalidInput("expires_at is in the past", "expires_at")
        return expires_at
    return None


def _expiry_field(expires_in: float | None) -> str:
    """The field an expiry came from, to name in a refusal."""
    return "expires_in" if expires_in is not None else "expires_at"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidInput(
            "invalid cursor; pass next_cursor from the previous page", "cursor"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput("invalid cursor; pass next_cursor from the previous page", "cursor")
    return data


def _decode_key_cursor(cursor: str) -> tuple[datetime, str]:
    data = _decode_cursor(cursor)
    try:
        return datetime.fromisoformat(data["c"]), str(data["i"])
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(
            "invalid cursor; pass next_cursor from the previous page", "cursor"
        ) from None


def _decode_audit_cursor(cursor: str) -> int:
    value = _decode_cursor(cursor).get("b")
    # An audit entry id: a positive bigint (a forged one must not reach the query).
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise InvalidInput("invalid cursor; pass next_cursor from the previous page", "cursor")
    return value


@contextlib.asynccontextmanager
async def open_key_service(config: Config) -> AsyncIterator[KeyService]:
    """The service as the CLI and `keygate dev` use it: its own pool, and changes
    published to the gateways' caches whenever Redis is reachable."""
    db = Database(config.database_url, timeout=config.server.store_timeout)
    hasher = SecretHasher(config.keys.argon2, threads=1)
    cache = KeyCacheWriter.from_config(config)
    try:
        yield KeyService(
            db, config.keys, hasher, on_change=cache.key_changed, scope_catalogue=config.scopes
        )
    finally:
        await cache.close()
        await db.close()
        hasher.close()
