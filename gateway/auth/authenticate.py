"""The authentication steps of a request, top to bottom, each raising one Refusal."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping

from multidict import CIMultiDictProxy, istr

from gateway.auth.credentials import read_credential
from gateway.auth.errors import (
    ExpiredKey,
    InsufficientScope,
    InvalidKey,
    MissingKey,
    RevokedKey,
    WrongOrg,
)
from gateway.auth.resolver import KeyResolver
from gateway.config import KeysConfig
from gateway.keys.format import MalformedKey, ParsedKey, parse_key
from gateway.keys.scopes import missing_scopes
from gateway.store.key_cache import KeyState


def parse_presented(presented: str, keys: KeysConfig) -> ParsedKey:
    """Checksum and prefix checks: no store is touched for a typo or a random string."""
    try:
        parsed = parse_key(presented, keys.prefixes)
    except MalformedKey:
        raise InvalidKey() from None
    if parsed.env not in keys.accept_envs:
        raise InvalidKey()
    return parsed


def check_status(state: KeyState, now: float) -> None:
    if state.revoked:
        raise RevokedKey()
    if state.expires_at is not None and state.expires_at <= now:
        raise ExpiredKey()


async def identify(
    headers: CIMultiDictProxy[str],
    *,
    resolver: KeyResolver,
    keys: KeysConfig,
    client: str | None = None,
) -> KeyState:
    """Who is calling: the state of a valid, live key; raise the matching Refusal otherwise."""
    presented = read_credential(headers)
    if presented is None:
        raise MissingKey()
    return await identify_key(presented, resolver=resolver, keys=keys, client=client)


async def identify_key(
    presented: str, *, resolver: KeyResolver, keys: KeysConfig, client: str | None = None
) -> KeyState:
    """The state of the presented key if it is valid and live; raise its Refusal otherwise."""
    state = resolver.proven(presented)  # the common case: this very string passed before
    if state is None:
        state = await _identify_anew(presented, resolver, keys, client)
    if state.revoked or state.expires_at is not None:
        check_status(state, time.time())  # expiry against the clock, on every request
    return state


async def _identify_anew(
    presented: str, resolver: KeyResolver, keys: KeysConfig, client: str | None
) -> KeyState:
    """Every check of a key not seen whole before: format, checksum, env, then the stores."""
    parsed = parse_presented(presented, keys)
    state = resolver.cached(parsed)  # no I/O and nothing to await
    if state is None:
        state = await resolver.resolve(parsed, client)
    resolver.remember(presented, state)
    return state


def authorise(
    state: KeyState, *, scopes: tuple[str, ...], org_param: str | None, params: Mapping[str, str]
) -> None:
    """May this key use this route: its scopes, and the org named in the path."""
    held = state.scopes
    for wanted in scopes:
        # A scope held as such is the common case; wildcards go through the full rules.
        if wanted not in held and missing_scopes(held, (wanted,)):
            raise InsufficientScope(scopes)
    if org_param is not None and params.get(org_param) != state.org:
        raise WrongOrg()


Headers = tuple[tuple[str, str], ...]

_ORG = istr("X-Keygate-Org")
_KEY_ID = istr("X-Keygate-Key-Id")
_SCOPES = istr("X-Keygate-Scopes")
_ENV = istr("X-Keygate-Env")


@functools.lru_cache(maxsize=4096)
def identity_headers(state: KeyState) -> Headers:
    """The identity sent upstream, as header pairs; cached per key state (immutable)."""
    return (
        (_ORG, state.org),
        (_KEY_ID, state.display_prefix),
        (_SCOPES, " ".join(state.scopes)),
        (_ENV, state.env),
    )
