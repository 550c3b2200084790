"""User tokens (SPEC §11): one component owns them whole, behind `recognise()`.

A token seen before costs one keyed hash (BLAKE2b under a key derived from the server
secret) and a dict lookup, then the expiry and revocation checks: what a cached API key
costs. A token not seen before is read (size, shape, header: gateway.auth.token_claims),
matched to its configured issuer, verified with joserfc by a key from that issuer's JWKS
(gateway.auth.jwks: cached, single-flight, refetched on an unknown `kid` at most once per
30 s, refreshed in the background, kept through an outage), its claims checked, its org
looked up (cached), and then remembered until its `exp`.

joserfc (not PyJWT) because the console's single sign-on already verifies ID tokens with
it: one JOSE library, with explicit per-call algorithm lists and typed keys, so a key can
never be used with an algorithm of another family.

The revocations (gateway.auth.token_revocations) and the user WebSocket sessions' watch
live here too; all background loops run under a Supervisor in `lifetime`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import redis.asyncio as aioredis
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import Key

from gateway.auth import token_claims as claims
from gateway.auth.errors import AuthUnavailable, ExpiredToken, InvalidToken, RevokedToken
from gateway.auth.jwks import JwksCache, ProviderError, fetch_json
from gateway.auth.token_claims import UserIdentity
from gateway.auth.token_revocations import Revocations
from gateway.config import UserTokenIssuer, is_loopback_url
from gateway.keys.errors import StoreUnavailable
from gateway.observability import metrics
from gateway.store import token_revocations as store
from gateway.store.db import Database
from gateway.store.token_revocations import TokenRevocation
from gateway.supervisor import Supervisor

log = logging.getLogger("keygate.auth")

MIN_REFETCH = 30.0  # an unknown kid refetches an issuer's JWKS at most this often
REFRESH = 300.0  # background refresh of each issuer's JWKS
RETRY = 10.0  # after a failed background refresh
ORG_MISS_TTL = 5.0  # an unknown org is asked again after this long
WATCH_INTERVAL = 0.25  # user WebSocket sessions: expiry checks
# Fetches made for user tokens: a provider that hangs must not hold requests for long.
FETCH_TIMEOUT = aiohttp.ClientTimeout(total=3, connect=2, sock_read=3)
UNAVAILABLE = (
    "The token cannot be checked now (its issuer's signing keys or the store are "
    "unreachable); retry shortly."
)


class UserSessions(Protocol):
    """The proxy's WebSocket registry as this component needs it (auth does not import
    proxy): end each user session for which `why` gives a reason."""

    def end_users(self, why: Callable[[UserIdentity], str | None]) -> int: ...


class IssuerKeys:
    """One issuer's signing keys: from `jwks_url`, or from OpenID Connect discovery."""

    def __init__(
        self,
        issuer: UserTokenIssuer,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._session = session
        self._clock = clock
        self.jwks: JwksCache | None = None
        if issuer.jwks_url is not None:
            self.jwks = self._cache(issuer.jwks_url)
        self._discovery: asyncio.Task[None] | None = None
        self._discovery_failed = float("-inf")

    def _cache(self, url: str) -> JwksCache:
        return JwksCache(self._session, url, min_refetch_interval=MIN_REFETCH, clock=self._clock)

    @property
    def loaded(self) -> bool:
        return self.jwks is not None and self.jwks.loaded

    async def key(self, kid: str | None, alg: str) -> Key:
        if self.jwks is None:
            if self._discovery is None and self._clock() - self._discovery_failed < MIN_REFETCH:
                raise ProviderError("discovery failed recently")
            await self._discovered()
        assert self.jwks is not None
        return await self.jwks.key(kid, alg)

    async def refresh(self) -> None:
        """Fetch the keys now (the background loop); raises ProviderError."""
        if self.jwks is None:
            await self._discovered()
        assert self.jwks is not None
        await self.jwks.refresh()

    async def _discovered(self) -> None:
        task = self._discovery
        if task is None:
            task = self._discovery = asyncio.create_task(self._discover())
            task.add_done_callback(self._settled)
        await asyncio.shield(task)

    def _settled(self, task: asyncio.Task[None]) -> None:
        if self._discovery is task:
            self._discovery = None
        if not task.cancelled() and task.exception() is not None:
            self._discovery_failed = self._clock()

    async def _discover(self) -> None:
        issuer = self.issuer.issuer
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        _, doc = await fetch_json(self._session, "GET", url, "discovery")
        if not isinstance(doc.get("issuer"), str) or doc["issuer"].rstrip("/") != issuer.rstrip(
            "/"
        ):
            raise ProviderError("the discovery document names another issuer")
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme not in ("http", "https"):
            raise ProviderError("the discovery document has no valid jwks_uri")
        if not jwks_uri.startswith("https://") and not is_loopback_url(jwks_uri):
            raise ProviderError("the discovery document's jwks_uri is not https")
        if self.jwks is None:
            self.jwks = self._cache(jwks_uri)

    async def refresh_periodically(self) -> None:
        """Keep the keys fresh in the background: a rotation is usually known before the
        first token signed by the new key arrives."""
        failing = False
        while True:
            try:
                await self.refresh()
            except ProviderError as exc:
                if not failing:
                    log.warning(
                        "signing keys of user-token issuer %s could not be fetched (%s); "
                        "the keys known so far stay in use",
                        self.issuer.issuer,
                        exc.reason,
                    )
                failing = True
                await asyncio.sleep(RETRY)
                continue
            if failing:
                log.info("signing keys of user-token issuer %s fetched again", self.issuer.issuer)
            failing = False
            await asyncio.sleep(REFRESH)


class UserTokens:
    """Verifies user tokens and remembers the verified ones until their expiry."""

    def __init__(
        self,
        issuers: tuple[UserTokenIssuer, ...],
        *,
        db: Database,
        server_secret: bytes,
        redis: aioredis.Redis | None = None,
        sessions: UserSessions | None = None,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuers = {i.issuer: i for i in issuers}
        self.db = db
        self.redis = redis
        self.sessions = sessions
        self.max_entries = max_entries
        self.clock = clock
        self.monotonic = monotonic
        self.revocations = Revocations(db, on_revoked=self._revoked)
        self.keys: dict[str, IssuerKeys] = {}
        self._session: aiohttp.ClientSession | None = None
        cache_key = hmac.new(server_secret, b"keygate-user-token-cache", hashlib.sha256).digest()
        self._mac = hashlib.blake2b(key=cache_key, digest_size=16, person=b"keygate-utoken")
        self._verified: dict[bytes, UserIdentity] = {}
        self._orgs: dict[str, float] = {}  # slug -> when it was found missing (inf: exists)
        self._org_lookups: dict[str, asyncio.Task[bool]] = {}

    def __bool__(self) -> bool:
        return bool(self.issuers)

    # ------------------------------------------------------------------ identify

    async def recognise(self, credential: str) -> UserIdentity | None:
        """The identity of `credential` when it is a valid, live, unrevoked user token;
        None when it is not shaped as one (then it is read as an API key); the Refusal
        when it is a token that fails.

        A token seen before is found by its keyed hash first: its shape was checked when
        it was verified, so a repeat costs a count of dots, a hash and a dict lookup."""
        if credential.count(".") not in (2, 4):  # an API key has no dots
            return None
        mac = self._mac.copy()
        mac.update(credential.encode())
        proof = mac.digest()
        now = self.clock()
        identity = self._verified.get(proof)
        if identity is None:
            if claims.token_shape(credential) is None:
                return None
            identity = await self._verify(credential, now)
            self._remember(proof, identity)
        if identity.expired(now):
            self._verified.pop(proof, None)
            raise ExpiredToken().about_user(identity)
        if self.revocations.revoked(identity):
            raise RevokedToken().about_user(identity)
        return identity

    async def _verify(self, token: str, now: float) -> UserIdentity:
        unverified = claims.read_unverified(token)
        issuer = claims.trusted_issuer(unverified, self.issuers)
        keys = self.keys.get(issuer.issuer)
        if keys is None:  # not started (or stopping)
            raise AuthUnavailable(UNAVAILABLE)
        try:
            key = await keys.key(unverified.kid, unverified.alg)
        except ProviderError:
            if not keys.loaded:  # never fetched: nothing says the token is wrong
                raise AuthUnavailable(UNAVAILABLE) from None
            raise InvalidToken(claims.UNKNOWN_KEY) from None
        try:
            jws.deserialize_compact(token, key, algorithms=[unverified.alg])
        except (JoseError, ValueError, TypeError):
            raise InvalidToken(claims.SIGNATURE) from None
        # The claims read before are those of the bytes just verified.
        identity = claims.identity_from_claims(unverified.claims, issuer, now)
        try:
            await self.revocations.ensure_loaded()
            known = await self._org_exists(identity.org)
        except StoreUnavailable:
            metrics.POSTGRES_ERRORS.inc()
            raise AuthUnavailable(UNAVAILABLE) from None
        if not known:
            raise InvalidToken(claims.UNKNOWN_ORG)
        return identity

    def _remember(self, proof: bytes, identity: UserIdentity) -> None:
        verified = self._verified
        if len(verified) >= self.max_entries:
            now = self.clock()
            for stale in [p for p, i in verified.items() if i.expired(now)]:
                del verified[stale]
            if len(verified) >= self.max_entries:  # still full: drop the oldest tenth
                for old in list(verified)[: max(1, self.max_entries // 10)]:
                    del verified[old]
        verified[proof] = identity

    async def _org_exists(self, slug: str) -> bool:
        """Orgs are never deleted: one that exists is remembered for good; a missing one
        is asked again after ORG_MISS_TTL. One lookup per slug at a time."""
        missing_since = self._orgs.get(slug)
        if missing_since is not None:
            if missing_since == float("inf"):
                return True
            if self.monotonic() - missing_since < ORG_MISS_TTL:
                return False
        task = self._org_lookups.get(slug)
        if task is None:
            task = asyncio.create_task(self._lookup_org(slug))
            self._org_lookups[slug] = task
            task.add_done_callback(lambda t: self._org_lookups.pop(slug, None))
        return await asyncio.shield(task)

    async def _lookup_org(self, slug: str) -> bool:
        async with self.db.connection() as conn:
            found = await store.org_exists(conn, slug)
        self._orgs[slug] = float("inf") if found else self.monotonic()
        return found

    # ------------------------------------------------------------------ sessions

    def _revoked(self, revocation: TokenRevocation) -> None:
        """A revocation heard: end the open sessions of the tokens it covers."""
        if self.sessions is None:
            return

        def why(identity: UserIdentity) -> str | None:
            if identity.org != revocation.org or identity.subject != revocation.subject:
                return None
            if revocation.issuer not in (store.ANY_ISSUER, identity.issuer):
                return None
            issued = identity.issued_at
            return RevokedToken.message if issued is None or issued <= revocation.before else None

        self.sessions.end_users(why)

    async def watch_sessions(self) -> None:
        """End user sessions whose token expired (revocations end theirs when heard)."""
        assert self.sessions is not None
        sessions = self.sessions
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            sessions.end_users(self._expired_reason)

    def _expired_reason(self, identity: UserIdentity) -> str | None:
        return ExpiredToken.message if identity.expired(self.clock()) else None

    # ------------------------------------------------------------------ lifetime

    async def lifetime(self, _app: Any = None) -> AsyncIterator[None]:
        """aiohttp cleanup_ctx: the HTTP client for the issuers, their key refreshes, the
        revocation channels and the session watch, while the app runs."""
        if not self.issuers:
            yield
            return
        session = aiohttp.ClientSession(timeout=FETCH_TIMEOUT)
        self.keys = {
            name: IssuerKeys(i, session, self.monotonic) for name, i in self.issuers.items()
        }
        supervisor = Supervisor()
        for i, keys in enumerate(self.keys.values()):
            supervisor.start(f"user-token-keys-{i}", keys.refresh_periodically)
        for name, loop in self.revocations.loops(self.redis).items():
            supervisor.start(name, loop)
        if self.sessions is not None:
            supervisor.start("user-token-sessions", self.watch_sessions)
        try:
            yield
        finally:
            await supervisor.stop()
            for keys in self.keys.values():
                if keys.jwks is not None:
                    await keys.jwks.close()
            self.keys = {}
            await session.close()
