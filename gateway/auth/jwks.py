"""An identity provider's signing keys (JWKS), fetched over aiohttp and cached: shared by
the console's single sign-on (gateway.console.oidc) and the proxy's user tokens
(gateway.auth.user_tokens).

The cache is built for the request path: a request that needs a key the cache lacks (a
rotation: a new `kid`) causes at most one fetch, shared by every request that needs it
meanwhile (single-flight), and at most one such fetch per `min_refetch_interval`;
a failed fetch keeps the keys already known (an outage of the provider does not stop
tokens signed by known keys). `refresh()` is what a background loop calls.

A key fits an algorithm only by its type (RSA for RS*/PS*, EC on the algorithm's curve for
ES*, OKP for EdDSA), its own `alg` when it names one, and `use` `sig` when given: a token
cannot pick a key meant for something else (the RS/HS confusion, say).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

MAX_RESPONSE_BYTES = 512 * 1024  # discovery, JWKS, token and userinfo answers are small

# What each algorithm's key must be: (kty, curve or None).
_KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    **{f"RS{n}": ("RSA", None) for n in (256, 384, 512)},
    **{f"PS{n}": ("RSA", None) for n in (256, 384, 512)},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}


class ProviderError(Exception):
    """The provider could not be asked, or its answer cannot be used; `reason` says which,
    in words (the console shows it to the person signing in)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def fetch_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    what: str,
    *,
    headers: Mapping[str, str] | None = None,
    data: str | None = None,
    ok_statuses: tuple[int, ...] = (200,),
) -> tuple[int, dict[str, Any]]:
    """One bounded request whose answer must be a JSON object; network errors, timeouts,
    oversize or malformed answers become `ProviderError` naming `what` was being fetched."""
    try:
        async with session.request(method, url, headers=headers, data=data) as resp:
            body = await resp.content.read(MAX_RESPONSE_BYTES + 1)
            status = resp.status
    except TimeoutError:
        raise ProviderError(f"the identity provider did not answer in time ({what})") from None
    except aiohttp.ClientError:
        raise ProviderError(f"the identity provider could not be reached ({what})") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise ProviderError(f"the identity provider's answer was too large ({what})")
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if status not in ok_statuses:
        raise ProviderError(f"the identity provider answered HTTP {status} ({what})")
    if not isinstance(document, dict):
        raise ProviderError(f"the identity provider's answer was not a JSON object ({what})")
    return status, document


def key_fits(key: Key, alg: str) -> bool:
    """Whether `key` may verify a signature made with `alg` (type, curve, alg, use)."""
    wanted = _KEY_TYPES.get(alg)
    if wanted is None:
        return False
    kty, curves = wanted
    if key.key_type != kty:
        return False
    if curves is not None and key.get("crv") not in curves:
        return False
    if key.get("alg") not in (None, alg):
        return False
    return key.get("use") in (None, "sig")


class JwksCache:
    """A provider's signing keys, fetched on first use (or by `refresh`) and again when a
    token names a key id not in the cached set, at most once per `min_refetch_interval`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        jwks_uri: str,
        *,
        min_refetch_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jwks_uri = jwks_uri
        self._session = session
        self._min_refetch = min_refetch_interval
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._last_miss_refetch = float("-inf")
        self._last_failure = float("-inf")
        self._fetch: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        return self._keys is not None

    async def key(self, kid: str | None, alg: str) -> Key:
        """The verification key for a token header's `kid` and `alg`; ProviderError when
        the provider publishes none that fits (after at most one refetch)."""
        if self._keys is None:
            if self._fetch is None and self._clock() - self._last_failure < self._min_refetch:
                raise ProviderError("the identity provider's signing keys are not available")
            await self._fetched()
        key = self._pick(kid, alg)
        if key is not None:
            return key
        if self._fetch is not None:  # a refetch is under way: its answer may have the key
            await self._fetched()
        elif self._clock() - self._last_miss_refetch >= self._min_refetch:
            # Rate-limited from the last refetch a miss caused, not from the first load: a
            # rotation right after start-up must still be picked up.
            self._last_miss_refetch = self._clock()
            await self._fetched()
        key = self._pick(kid, alg)
        if key is None:
            raise ProviderError("the token was signed with a key the provider does not publish")
        return key

    async def refresh(self) -> None:
        """Fetch the keys now (a background refresh); joins a fetch already under way.
        Raises ProviderError when it fails; the keys known before stay."""
        await self._fetched()

    def _pick(self, kid: str | None, alg: str) -> Key | None:
        if self._keys is None:
            return None
        candidates = [k for k in self._keys.keys if k.kid == kid]
        if kid is None and not candidates and len(self._keys.keys) == 1:
            candidates = list(self._keys.keys)  # a provider with one key may omit kids
        for key in candidates:
            if key_fits(key, alg):
                return key
        return None

    async def _fetched(self) -> None:
        """Await the one fetch in flight, starting it if there is none (single-flight: a
        task, so it finishes for the others when one waiting request goes away)."""
        task = self._fetch
        if task is None:
            task = self._fetch = asyncio.create_task(self._load())
            task.add_done_callback(self._settled)
        await asyncio.shield(task)

    def _settled(self, task: asyncio.Task[None]) -> None:
        if self._fetch is task:
            self._fetch = None
        if not task.cancelled() and task.exception() is not None:
            self._last_failure = self._clock()

    async def _load(self) -> None:
        _, document = await fetch_json(self._session, "GET", self.jwks_uri, "signing keys")
        try:
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, KeyError, TypeError, ValueError):
            raise ProviderError("the identity provider published no usable signing keys") from None
        self._keys = keys
        self._fetched_at = self._clock()

    async def close(self) -> None:
        """Cancel a fetch under way (the owner is stopping)."""
        task = self._fetch
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
