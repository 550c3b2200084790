"""Signing in: with a password (throttled per email and per client address) or with the
verified email of single sign-on. Either way the result is a new session.

Password sign-in answers one way whatever was wrong, after the same work, so the answer
does not tell which accounts exist (gateway/people/errors.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from gateway.keys.errors import InvalidInput
from gateway.keys.hashing import SecretHasher
from gateway.people import credentials
from gateway.people.errors import SSO_NO_ACCOUNT, SignInFailed, SignInThrottled
from gateway.people.models import SignedIn
from gateway.people.rules import check_name, possible_password
from gateway.people.sessions import Sessions
from gateway.people.throttle import ThrottlePolicy
from gateway.store import people_queries as q
from gateway.store.db import Database


@dataclass
class SignIn:
    """Sign-in for the console. `throttle` may be replaced while running (tests tighten it)."""

    db: Database
    hasher: SecretHasher
    sessions: Sessions
    clock: Callable[[], datetime]
    throttle: ThrottlePolicy
    _dummy_hash: str | None = field(default=None, repr=False)

    async def with_password(
        self, email: str, password: str, *, client_ip: str | None, user_agent: str | None
    ) -> SignedIn:
        """A session for a local account, or SignInFailed with one message whatever was
        wrong (unknown email, disabled, no password, wrong password) after the same work,
        or SignInThrottled when the email or the address made too many attempts."""
        typed = email if isinstance(email, str) else ""
        now = self.clock()
        email_bucket = credentials.email_bucket(typed)
        ip_bucket = credentials.ip_bucket(client_ip)
        await self.count_attempt(email_bucket, ip_bucket, now)
        address = credentials.lookup_email(typed)
        stored = None
        if address is not None:
            async with self.db.connection() as conn:
                stored = await q.get_user(conn, address)
        encoded = stored.password_hash if stored is not None else None
        # Unknown emails, accounts without a password and passwords no account can have
        # (too long: never truncated, or a longer one would match) cost one argon2 verify.
        candidate = password if isinstance(password, str) else ""
        possible = possible_password(candidate)
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
            return await self.sessions.start(conn, stored, self.clock(), client_ip, user_agent)

    async def count_attempt(self, email_bucket: str, ip_bucket: str, now: datetime) -> None:
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

    async def with_sso(
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
                    await q.set_name(conn, stored.id, check_name(name))
            return await self.sessions.start(conn, stored, now, client_ip, user_agent)

    async def _dummy(self) -> str:
        """A hash of nothing anyone knows, with the configured parameters."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hasher.hash_async(credentials.new_token())
        return self._dummy_hash
