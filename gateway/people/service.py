"""The people service: invites, sign-in, sessions and members, with their rules.

The CLI, the admin API and the console all call this, as they call the key service for
keys; each action runs in one transaction with its audit entry. Sessions are read from
PostgreSQL on every request (no cache), so a revoked session ends at the next request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from gateway.config import Config, ConsoleConfig
from gateway.keys.errors import Conflict, Forbidden, InvalidInput, NotFound
from gateway.keys.hashing import SecretHasher
from gateway.keys.models import Actor, utcnow
from gateway.people import credentials
from gateway.people.errors import SSO_NO_ACCOUNT, SignInFailed, SignInThrottled
from gateway.people.models import ROLES, Invite, Member, SessionInfo, SignedIn, User
from gateway.people.throttle import ThrottlePolicy
from gateway.store import people_queries as q
from gateway.store import queries
from gateway.store.db import Connection, Database

log = logging.getLogger("keygate.people")

TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most once a minute
MAX_NAME = 200
MAX_USER_AGENT = 512
INVITE_GONE = "this invite link has expired or was already used; ask for a new one"


class PeopleService:
    """Users, memberships, invites and sessions of the console."""

    def __init__(
        self,
        db: Database,
        hasher: SecretHasher,
        secret: bytes,
        console: ConsoleConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        throttle: ThrottlePolicy | None = None,
    ) -> None:
        self.db = db
        self.hasher = hasher
        self.secret = secret
        self.console = console
        self.clock = clock
        self.throttle = throttle or ThrottlePolicy()
        self._dummy_hash: str | None = None

    # --- invites --------------------------------------------------------------------

    async def invite(
        self, actor: Actor, email: str, org: str, role: str, *, name: str | None = None
    ) -> Invite:
        """A one-time link for `email` to join `org` as `role` (root, or an owner of org).

        Creates the user when new and the membership at once (so SSO users can sign in
        straight away). Inviting a member again with the same role issues a fresh link;
        with another role it is a conflict (change the role instead).
        """
        _require_owner(actor, org)
        email = credentials.normalise_email(email)
        role = _check_role(role)
        clean_name = _check_name(name) if name is not None else ""
        now = self.clock()
        token = credentials.new_token()
        expires_at = now + timedelta(seconds=self.console.invite_ttl)
        async with self.db.transaction() as conn:
            await _require_org(conn, org)
            stored = await q.insert_user(conn, email, clean_name, now)
            if stored.user.disabled:
                raise Conflict(f"{email} is disabled and cannot be invited", "email")
            if clean_name and not stored.user.name:
                await q.set_name(conn, stored.id, clean_name)
            current = await q.get_role(conn, org, stored.id)
            if current is None:
                await q.add_member(conn, org, stored.id, role, now)
            elif current != role:
                raise Conflict(
                    f"{email} is already {_article(current)} {current} of {org}; change their"
                    " role instead",
                    "role",
                )
            await q.insert_invite(
                conn,
                credentials.digest(token),
                stored.id,
                org,
                role,
                now=now,
                created_by=actor.principal,
                expires_at=expires_at,
            )
            await _audit(conn, actor, now, "member.invite", org, {"email": email, "role": role})
        member = Member(
            org, email, clean_name or stored.user.name, role, stored.user.last_sign_in_at
        )
        return Invite(member, token, expires_at)

    async def pending_invite(self, token: str) -> Member | None:
        """Whose invite a link is, while it can still be used (for the set-password page)."""
        if not credentials.well_formed_token(token):
            return None
        async with self.db.connection() as conn:
            invite = await q.get_invite(conn, credentials.digest(token))
        if invite is None or not self._usable(invite):
            return None
        user = invite.user.user
        return Member(invite.org, user.email, user.name, invite.role, user.last_sign_in_at)

    async def accept_invite(
        self,
        token: str,
        password: str,
        *,
        name: str | None = None,
        client_ip: str | None,
        user_agent: str | None,
    ) -> SignedIn:
        """Use the link: set the password (or, for an account that has one and whose link
        an owner made, check it) and sign in. The link works once, within invite_ttl.

        An owner sees the links they make, so an owner's link must not set the password of
        someone who already has one or belongs to other orgs: that would let an owner of
        one org take over a person's access to another. Only root's links (CLI, root
        token) may set a password in every case: root can do anything anyway.
        """
        password = credentials.check_password(password)
        clean_name = _check_name(name) if name is not None else None
        if not credentials.well_formed_token(token):
            raise InvalidInput(INVITE_GONE, "token")
        token_hash = credentials.digest(token)
        # Cheap checks first: no argon2 work for a link that cannot be used.
        async with self.db.connection() as conn:
            seen = await q.get_invite(conn, token_hash)
        if seen is None or not self._usable(seen):
            raise InvalidInput(INVITE_GONE, "token")
        sets_password = await self._sets_password(seen)
        if not sets_password and seen.user.password_hash is not None:
            # The link confirms an account that has a password with that password: a
            # password guess like any sign-in, counted and throttled the same way (the
            # owner who made the link must not get unlimited guesses at it).
            await self._count_attempt(
                credentials.email_bucket(seen.user.user.email),
                credentials.ip_bucket(client_ip),
                self.clock(),
            )
        new_hash = await self.hasher.hash_async(password) if sets_password else None
        now = self.clock()
        async with self.db.transaction() as conn:
            invite = await q.get_invite(conn, token_hash, for_update=True)
            if invite is None or not self._usable(invite):
                raise InvalidInput(INVITE_GONE, "token")
            stored = invite.user
            roles = await q.roles_of(conn, stored.id)
            if invite.org not in roles:  # removed from the org since the link was made
                raise InvalidInput(INVITE_GONE, "token")
            if _link_sets_password(invite, roles) != sets_password:
                # The account changed between the two reads (a password set elsewhere).
                raise InvalidInput(
                    "your account changed while the invite was being accepted; open the link again",
                    "password",
                )
            if new_hash is not None:
                await q.set_password(conn, stored.id, new_hash)
                # A new password ends every other session of the person.
                await q.revoke_user_sessions(conn, stored.id, now)
            elif stored.password_hash is not None:
                if not await self.hasher.verify_async(stored.password_hash, password):
                    raise InvalidInput(
                        "you already have a Keygate account: enter its password to accept"
                        " the invite",
                        "password",
                    )
                await q.forget_attempts(conn, credentials.email_bucket(stored.user.email))
            else:
                raise InvalidInput(
                    "this account already belongs to other organisations and signs in with"
                    " single sign-on; use that, or ask the root admin for a link",
                    "token",
                )
            await q.use_invite(conn, token_hash, now)
            if clean_name:
                await q.set_name(conn, stored.id, clean_name)
            return await self._start_session(conn, stored, now, client_ip, user_agent)

    async def _sets_password(self, invite: q.StoredInvite) -> bool:
        async with self.db.connection() as conn:
            roles = await q.roles_of(conn, invite.user.id)
        return _link_sets_password(invite, roles)

    def _usable(self, invite: q.StoredInvite) -> bool:
        return (
            invite.used_at is None
            and invite.expires_at > self.clock()
            and not invite.user.user.disabled
        )

    # --- sign-in --------------------------------------------------------------------

    async def sign_in_password(
        self, email: str, password: str, *, client_ip: str | None, user_agent: str | None
    ) -> SignedIn:
        """A session for a local account, or SignInFailed with one message whatever was
        wrong (unknown email, disabled, no password, wrong password) after the same work,
        or SignInThrottled when the email or the address made too many attempts."""
        typed = email if isinstance(email, str) else ""
        now = self.clock()
        email_bucket = credentials.email_bucket(typed)
        ip_bucket = credentials.ip_bucket(client_ip)
        await self._count_attempt(email_bucket, ip_bucket, now)
        address = credentials.lookup_email(typed)
        stored = None
        if address is not None:
            async with self.db.connection() as conn:
                stored = await q.get_user(conn, address)
        encoded = stored.password_hash if stored is not None else None
        # Unknown emails, accounts without a password and passwords no account can have
        # (too long: never truncated, or a longer one would match) cost one argon2 verify.
        candidate = password if isinstance(password, str) else ""
        possible = _possible_password(candidate)
        dummy = await self._dummy()  # made before any timing: the first attempt is no slower
        matches = await self.hasher.verify_async(
            encoded if encoded is not None and possible else dummy,
            candidate if possible else "",
        )
        if not (matches and possible) or stored is None or encoded is None or stored.user.disabled:
            raise SignInFailed()
        rehashed = await self.hasher.rehash_async(encoded, candidate)
        async with self.db.transaction() as conn:
            await q.forget_attempts(conn, email_bucket)
            await q.take_back_attempt(conn, ip_bucket)
            if rehashed is not None:
                await q.replace_password_hash(conn, stored.id, encoded, rehashed)
            return await self._start_session(conn, stored, self.clock(), client_ip, user_agent)

    async def _count_attempt(self, email_bucket: str, ip_bucket: str, now: datetime) -> None:
        """Count one password attempt on the email and the client address, before the
        password is checked; SignInThrottled when either is over its limit."""
        policy = self.throttle
        async with self.db.transaction() as conn:
            by_email = await q.count_attempt(conn, email_bucket, now, policy.window)
            by_ip = await q.count_attempt(conn, ip_bucket, now, policy.window)
        over = [
            count.retry_after(now, policy.window)
            for count, limit in ((by_email, policy.per_email), (by_ip, policy.per_ip))
            if count.attempts > limit
        ]
        if over:
            raise SignInThrottled(max(over))

    async def sign_in_sso(
        self, email: str, name: str | None, *, client_ip: str | None, user_agent: str | None
    ) -> SignedIn:
        """A session for the verified `email` of single sign-on: an existing, enabled user
        only (people join by invitation, never by signing in)."""
        address = credentials.lookup_email(email)
        now = self.clock()
        async with self.db.transaction() as conn:
            stored = None if address is None else await q.get_user(conn, address, for_update=True)
            if stored is None or stored.user.disabled:
                raise SignInFailed(SSO_NO_ACCOUNT)
            if name and not stored.user.name:
                with contextlib.suppress(InvalidInput):
                    await q.set_name(conn, stored.id, _check_name(name))
            return await self._start_session(conn, stored, now, client_ip, user_agent)

    async def _start_session(
        self,
        conn: Connection,
        stored: q.StoredUser,
        now: datetime,
        client_ip: str | None,
        user_agent: str | None,
    ) -> SignedIn:
        session_id = credentials.new_token()
        expires_at = now + timedelta(seconds=self.console.absolute_timeout)
        await q.insert_session(
            conn,
            credentials.digest(session_id),
            stored.id,
            now=now,
            expires_at=expires_at,
            client_ip=client_ip,
            user_agent=_user_agent(user_agent),
        )
        await q.stamp_sign_in(conn, stored.id, now)
        roles = await q.roles_of(conn, stored.id)
        user = User(
            stored.user.email,
            stored.user.name,
            False,
            stored.user.created_at,
            now,
            stored.user.has_password,
        )
        info = SessionInfo(user, roles, credentials.csrf_token(self.secret, session_id), expires_at)
        return SignedIn(session_id, info, int(self.console.absolute_timeout))

    async def _dummy(self) -> str:
        """A hash of nothing anyone knows, with the configured parameters."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hasher.hash_async(credentials.new_token())
        return self._dummy_hash

    # --- sessions -------------------------------------------------------------------

    async def session(self, session_id: str) -> SessionInfo | None:
        """The live session `session_id` names, or None (unknown, signed out, revoked,
        idle or past its absolute expiry, user disabled). Read from PostgreSQL each time."""
        if not credentials.well_formed_token(session_id):
            return None
        id_hash = credentials.digest(session_id)
        now = self.clock()
        async with self.db.connection() as conn:
            stored = await q.get_session(conn, id_hash)
            if stored is None or not self._live(stored, now):
                return None
            if now - stored.last_seen_at >= TOUCH_EVERY:
                await q.touch_session(conn, id_hash, now)
            roles = await q.roles_of(conn, stored.user.id)
        return SessionInfo(
            stored.user.user,
            roles,
            credentials.csrf_token(self.secret, session_id),
            stored.expires_at,
        )

    def _live(self, stored: q.StoredSession, now: datetime) -> bool:
        idle_until = stored.last_seen_at + timedelta(seconds=self.console.idle_timeout)
        return (
            stored.revoked_at is None
            and now < stored.expires_at
            and now < idle_until
            and not stored.user.user.disabled
        )

    async def sign_out(self, session_id: str) -> None:
        """End the session (nothing happens for an unknown one)."""
        if not credentials.well_formed_token(session_id):
            return
        async with self.db.connection() as conn:
            await q.revoke_session(conn, credentials.digest(session_id), self.clock())

    def actor_for(
        self,
        info: SessionInfo,
        *,
        client_ip: str | None,
        user_agent: str | None,
        request_id: str | None,
        traceparent: str | None,
    ) -> Actor:
        """The person as the services' principal `user:<email>`, with their roles now."""
        return Actor(
            principal=f"user:{info.user.email}",
            roles=dict(info.roles),
            client_ip=client_ip,
            request_id=request_id,
            traceparent=traceparent,
            user_agent=_user_agent(user_agent),
        )

    async def me(self, actor: Actor) -> dict[str, Any]:
        """`GET /admin/v1/me`: the principal and, for a person, their orgs and roles."""
        orgs = [{"slug": o, "role": r} for o, r in sorted((actor.roles or {}).items())]
        return {"principal": actor.principal, "orgs": orgs}

    # --- users (root) ---------------------------------------------------------------

    async def list_users(self, actor: Actor) -> list[tuple[User, dict[str, str]]]:
        """Every user with their roles (root only: `keygate users list`)."""
        _require_root(actor, "list users")
        async with self.db.connection() as conn:
            users = await q.list_users(conn)
            return [(u.user, await q.roles_of(conn, u.id)) for u in users]

    async def disable_user(self, actor: Actor, email: str) -> User:
        """Disable the account and end every session of it (root only)."""
        _require_root(actor, "disable users")
        address = credentials.normalise_email(email)
        now = self.clock()
        async with self.db.transaction() as conn:
            stored = await _require_user(conn, address)
            await q.disable_user(conn, stored.id, now)
            ended = await q.revoke_user_sessions(conn, stored.id, now)
            for org in await q.roles_of(conn, stored.id):
                await _audit(
                    conn, actor, now, "user.disable", org, {"email": address, "sessions": ended}
                )
            disabled = await q.get_user(conn, address)
        assert disabled is not None
        return disabled.user

    async def revoke_sessions(self, actor: Actor, email: str) -> int:
        """End every session of the user now (root only); how many were live."""
        _require_root(actor, "revoke sessions")
        address = credentials.normalise_email(email)
        now = self.clock()
        async with self.db.transaction() as conn:
            stored = await _require_user(conn, address)
            ended = await q.revoke_user_sessions(conn, stored.id, now)
            for org in await q.roles_of(conn, stored.id):
                await _audit(
                    conn,
                    actor,
                    now,
                    "user.sessions_revoke",
                    org,
                    {"email": address, "sessions": ended},
                )
        return ended

    # --- members --------------------------------------------------------------------

    async def list_members(self, actor: Actor, org: str) -> list[Member]:
        """The org's members (root, or an owner or admin of the org)."""
        _require_role(actor, org, ("owner", "admin"), "see the members")
        async with self.db.connection() as conn:
            await _require_org(conn, org)
            return await q.list_members(conn, org)

    async def change_role(self, actor: Actor, org: str, email: str, role: str) -> Member:
        """Give a member another role (root, or an owner); the last owner stays one."""
        _require_owner(actor, org)
        address = credentials.normalise_email(email)
        role = _check_role(role)
        now = self.clock()
        async with self.db.transaction() as conn:
            await _require_org(conn, org)
            owners = await q.lock_owners(conn, org)
            stored, current = await _require_member(conn, org, address)
            if current == role:
                return await _member(conn, org, address)
            if current == "owner" and owners == [stored.id]:
                raise Conflict(
                    f"{address} is the last owner of {org}; make someone else an owner first",
                    "role",
                )
            await q.set_role(conn, org, stored.id, role)
            await _audit(
                conn,
                actor,
                now,
                "member.role",
                org,
                {"email": address, "old_role": current, "role": role},
            )
            return await _member(conn, org, address)

    async def remove_member(self, actor: Actor, org: str, email: str) -> None:
        """Take a person out of the org (root, or an owner); the last owner stays."""
        _require_owner(actor, org)
        address = credentials.normalise_email(email)
        now = self.clock()
        async with self.db.transaction() as conn:
            await _require_org(conn, org)
            owners = await q.lock_owners(conn, org)
            stored, current = await _require_member(conn, org, address)
            if current == "owner" and owners == [stored.id]:
                raise Conflict(
                    f"{address} is the last owner of {org}; make someone else an owner first",
                    "email",
                )
            await q.remove_member(conn, org, stored.id)
            await _audit(
                conn, actor, now, "member.remove", org, {"email": address, "role": current}
            )


# --- rules --------------------------------------------------------------------------------


def _link_sets_password(invite: q.StoredInvite, roles: dict[str, str]) -> bool:
    """Whether accepting `invite` sets the password (else it confirms the one the person
    has). Root's links always set it; an owner's only for a person with no password who
    belongs to no other org (README: an owner cannot take over access to another org)."""
    from_root = not invite.created_by.startswith("user:")
    alone = set(roles) <= {invite.org}
    return from_root or (invite.user.password_hash is None and alone)


def _possible_password(value: str) -> bool:
    """Whether some account could have `value` as its password (check_password's rules)."""
    try:
        credentials.check_password(value)
    except InvalidInput:
        return False
    return True


def _require_root(actor: Actor, what: str) -> None:
    if not actor.is_root:
        raise Forbidden(f"only the root admin (keygate CLI or root token) can {what}")


def _require_owner(actor: Actor, org: str) -> None:
    _require_role(actor, org, ("owner",), "manage members")


def _require_role(actor: Actor, org: str, allowed: tuple[str, ...], what: str) -> None:
    """Root passes; a person needs one of `allowed` in `org` (no role there: the org does
    not exist for them); API keys never manage people."""
    if actor.is_root:
        return
    if actor.is_key:
        raise Forbidden(f"API keys cannot {what}; sign in to the console as an owner")
    role = actor.role_in(org)
    if role is None:
        raise NotFound(f"unknown org {org!r}", "org")
    if role not in allowed:
        needed = " or ".join(allowed)
        raise Forbidden(f"your role in org {org!r} is {role}; to {what} you need {needed}")


def _check_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidInput(f"invalid role {role!r}: use owner, admin or member", "role")
    assert isinstance(role, str)
    return role


def _check_name(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput("name must be a string", "name")
    value = value.strip()
    if len(value) > MAX_NAME:
        raise InvalidInput(f"name is longer than {MAX_NAME} characters", "name")
    if any(_unprintable(c) for c in value):
        raise InvalidInput("name cannot contain control or invisible formatting characters", "name")
    return value


def _unprintable(c: str) -> bool:
    """Control characters, lone surrogates (not text: the database refuses them) and the
    bidirectional overrides that make a name display as something else."""
    code = ord(c)
    return (
        code < 32
        or 127 <= code < 160
        or 0xD800 <= code <= 0xDFFF
        or 0x202A <= code <= 0x202E
        or 0x2066 <= code <= 0x2069
    )


def _user_agent(value: str | None) -> str | None:
    """As recorded: bounded, printable (it is whatever the client sent)."""
    if not value:
        return None
    clean = "".join(c if 32 <= ord(c) < 127 or ord(c) > 159 else "?" for c in value)
    return clean[:MAX_USER_AGENT]


def _article(role: str) -> str:
    return "an" if role[0] in "aeiou" else "a"


async def _require_org(conn: Connection, org: str) -> None:
    if not isinstance(org, str) or await queries.get_org(conn, org) is None:
        raise NotFound(f"unknown org {org!r}", "org")


async def _require_user(conn: Connection, email: str) -> q.StoredUser:
    stored = await q.get_user(conn, email, for_update=True)
    if stored is None:
        raise NotFound(f"unknown user {email!r}", "email")
    return stored


async def _require_member(conn: Connection, org: str, email: str) -> tuple[q.StoredUser, str]:
    stored = await q.get_user(conn, email)
    role = None if stored is None else await q.get_role(conn, org, stored.id)
    if stored is None or role is None:
        raise NotFound(f"{email} is not a member of {org}", "email")
    return stored, role


async def _member(conn: Connection, org: str, email: str) -> Member:
    return next(m for m in await q.list_members(conn, org) if m.email == email)


async def _audit(
    conn: Connection,
    actor: Actor,
    now: datetime,
    action: str,
    org: str,
    details: dict[str, Any],
) -> None:
    await queries.insert_audit(
        conn,
        at=now,
        org=org,
        key_id=None,
        action=action,
        principal=actor.principal,
        old_scopes=None,
        new_scopes=None,
        client_ip=actor.client_ip,
        request_id=actor.request_id,
        traceparent=actor.traceparent,
        details=details,
        user_agent=actor.user_agent,
    )


def public_origin(config: Config) -> str:
    """Where people reach the console: console.public_url, else http://<listen.admin>."""
    return config.console.public_url or "http://" + config.listen.admin


@contextlib.asynccontextmanager
async def open_people_service(config: Config) -> AsyncIterator[PeopleService]:
    """The service as the CLI and `keygate dev` use it, on its own pool."""
    db = Database(config.database_url, timeout=config.server.store_timeout)
    hasher = SecretHasher(config.keys.argon2, threads=1)
    try:
        # The CLI never derives CSRF tokens (it makes no sessions for browsers).
        yield PeopleService(db, hasher, (config.secret or "").encode(), config.console)
    finally:
        await db.close()
        hasher.close()
