"""Invitations: a one-time link that makes someone a member of an org, and accepting it
(setting or confirming the password, then signing in)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.config import ConsoleConfig
from gateway.keys.errors import Conflict, InvalidInput
from gateway.keys.hashing import SecretHasher
from gateway.keys.models import Actor
from gateway.people import credentials
from gateway.people.models import Invite, Member, SignedIn
from gateway.people.records import audit, require_org
from gateway.people.rules import check_name, check_role, link_sets_password, require_owner
from gateway.people.sessions import Sessions
from gateway.people.sign_in import SignIn
from gateway.store import people_queries as q
from gateway.store.db import Database

INVITE_GONE = "this invite link has expired or was already used; ask for a new one"


@dataclass(frozen=True)
class Invites:
    """Invite links; a link that confirms a password is throttled like a sign-in."""

    db: Database
    hasher: SecretHasher
    console: ConsoleConfig
    clock: Callable[[], datetime]
    sessions: Sessions
    sign_in: SignIn

    async def invite(
        self, actor: Actor, email: str, org: str, role: str, *, name: str | None = None
    ) -> Invite:
        """A one-time link for `email` to join `org` as `role` (root, or an owner of org).

        Creates the user when new and the membership at once (so SSO users can sign in
        straight away). Inviting a member again with the same role issues a fresh link;
        with another role it is a conflict (change the role instead).
        """
        require_owner(actor, org)
        email = credentials.normalise_email(email)
        role = check_role(role)
        clean_name = check_name(name) if name is not None else ""
        now = self.clock()
        token = credentials.new_token()
        expires_at = now + timedelta(seconds=self.console.invite_ttl)
        async with self.db.transaction() as conn:
            await require_org(conn, org)
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
            await audit(conn, actor, now, "member.invite", org, {"email": email, "role": role})
        member = Member(
            org, email, clean_name or stored.user.name, role, stored.user.last_sign_in_at
        )
        return Invite(member, token, expires_at)

    async def pending(self, token: str) -> Member | None:
        """Whose invite a link is, while it can still be used (for the set-password page)."""
        if not credentials.well_formed_token(token):
            return None
        async with self.db.connection() as conn:
            invite = await q.get_invite(conn, credentials.digest(token))
        if invite is None or not self._usable(invite):
            return None
        user = invite.user.user
        return Member(invite.org, user.email, user.name, invite.role, user.last_sign_in_at)

    async def accept(
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
        clean_name = check_name(name) if name is not None else None
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
            await self.sign_in.count_attempt(
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
            if link_sets_password(invite, roles) != sets_password:
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
            return await self.sessions.start(conn, stored, now, client_ip, user_agent)

    async def _sets_password(self, invite: q.StoredInvite) -> bool:
        async with self.db.connection() as conn:
            roles = await q.roles_of(conn, invite.user.id)
        return link_sets_password(invite, roles)

    def _usable(self, invite: q.StoredInvite) -> bool:
        return (
            invite.used_at is None
            and invite.expires_at > self.clock()
            and not invite.user.user.disabled
        )


def _article(role: str) -> str:
    return "an" if role[0] in "aeiou" else "a"
