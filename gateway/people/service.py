"""The people service: invites, sign-in, sessions and members, behind one object.

The CLI, the admin API and the console all call this, as they call the key service for
keys; each action runs in one transaction with its audit entry. The work is done by the
parts it composes, one job each:

- invites.py   invite links: make one, show whose it is, accept it
- sign_in.py   password sign-in with throttling, and single sign-on
- sessions.py  server-side sessions: start, look up, expire, sign out
- members.py   an org's members and their roles
- accounts.py  user accounts as root manages them
- rules.py     the pure permission and input checks they share
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from gateway.config import Config, ConsoleConfig
from gateway.keys.hashing import SecretHasher
from gateway.keys.models import Actor, utcnow
from gateway.people import sessions
from gateway.people.accounts import Accounts
from gateway.people.invites import Invites
from gateway.people.members import Members
from gateway.people.models import Invite, Member, SessionInfo, SignedIn, User
from gateway.people.sessions import Sessions
from gateway.people.sign_in import SignIn
from gateway.people.throttle import ThrottlePolicy
from gateway.store.db import Database


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
        self._sessions = Sessions(db, secret, console, clock)
        self._sign_in = SignIn(db, hasher, self._sessions, clock, throttle or ThrottlePolicy())
        self._invites = Invites(db, hasher, console, clock, self._sessions, self._sign_in)
        self._members = Members(db, clock)
        self._accounts = Accounts(db, clock)

    @property
    def throttle(self) -> ThrottlePolicy:
        """The sign-in limits; settable (invites' password checks count against them too)."""
        return self._sign_in.throttle

    @throttle.setter
    def throttle(self, policy: ThrottlePolicy) -> None:
        self._sign_in.throttle = policy

    # --- invites --------------------------------------------------------------------

    async def invite(
        self, actor: Actor, email: str, org: str, role: str, *, name: str | None = None
    ) -> Invite:
        """A one-time link for `email` to join `org` as `role` (see Invites.invite)."""
        return await self._invites.invite(actor, email, org, role, name=name)

    async def pending_invite(self, token: str) -> Member | None:
        """Whose invite a link is, while it can still be used (for the set-password page)."""
        return await self._invites.pending(token)

    async def accept_invite(
        self,
        token: str,
        password: str,
        *,
        name: str | None = None,
        client_ip: str | None,
        user_agent: str | None,
    ) -> SignedIn:
        """Use the link, set or confirm the password, and sign in (see Invites.accept)."""
        return await self._invites.accept(
            token, password, name=name, client_ip=client_ip, user_agent=user_agent
        )

    # --- sign-in --------------------------------------------------------------------

    async def sign_in_password(
        self, email: str, password: str, *, client_ip: str | None, user_agent: str | None
    ) -> SignedIn:
        """A session for a local account; SignInFailed or SignInThrottled otherwise."""
        return await self._sign_in.with_password(
            email, password, client_ip=client_ip, user_agent=user_agent
        )

    async def sign_in_sso(
        self, email: str, name: str | None, *, client_ip: str | None, user_agent: str | None
    ) -> SignedIn:
        """A session for the verified `email` of single sign-on (existing users only)."""
        return await self._sign_in.with_sso(email, name, client_ip=client_ip, user_agent=user_agent)

    # --- sessions -------------------------------------------------------------------

    async def session(self, session_id: str) -> SessionInfo | None:
        """The live session `session_id` names, or None. Read from PostgreSQL each time."""
        return await self._sessions.find(session_id)

    async def sign_out(self, session_id: str) -> None:
        """End the session (nothing happens for an unknown one)."""
        await self._sessions.end(session_id)

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
        return sessions.actor_for(
            info,
            client_ip=client_ip,
            user_agent=user_agent,
            request_id=request_id,
            traceparent=traceparent,
        )

    async def me(self, actor: Actor) -> dict[str, Any]:
        """`GET /admin/v1/me`: the principal and, for a person, their orgs and roles."""
        orgs = [{"slug": o, "role": r} for o, r in sorted((actor.roles or {}).items())]
        return {"principal": actor.principal, "orgs": orgs}

    # --- users (root) ---------------------------------------------------------------

    async def list_users(self, actor: Actor) -> list[tuple[User, dict[str, str]]]:
        """Every user with their roles (root only: `keygate users list`)."""
        return await self._accounts.list_all(actor)

    async def disable_user(self, actor: Actor, email: str) -> User:
        """Disable the account and end every session of it (root only)."""
        return await self._accounts.disable(actor, email)

    async def revoke_sessions(self, actor: Actor, email: str) -> int:
        """End every session of the user now (root only); how many were live."""
        return await self._accounts.revoke_sessions(actor, email)

    # --- members --------------------------------------------------------------------

    async def list_members(self, actor: Actor, org: str) -> list[Member]:
        """The org's members (root, or an owner or admin of the org)."""
        return await self._members.of_org(actor, org)

    async def change_role(self, actor: Actor, org: str, email: str, role: str) -> Member:
        """Give a member another role (root, or an owner); the last owner stays one."""
        return await self._members.change_role(actor, org, email, role)

    async def remove_member(self, actor: Actor, org: str, email: str) -> None:
        """Take a person out of the org (root, or an owner); the last owner stays."""
        await self._members.remove(actor, org, email)


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
