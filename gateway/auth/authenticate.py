"""The pure authentication steps (no I/O), each raising one Refusal: parse the presented
key, check a state's status, authorise a route, and the identity headers sent upstream.
The lookup that needs stores is `gateway.auth.key_lookup.KeyLookup.identify`."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Protocol

from multidict import istr

from gateway.auth.errors import ExpiredKey, InsufficientScope, InvalidKey, RevokedKey, WrongOrg
from gateway.config import KeysConfig
from gateway.keys.format import MalformedKey, ParsedKey, parse_key
from gateway.keys.scopes import missing_scopes
from gateway.keys.state import KeyState


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
    """Revoked or expired (against `now`, unix seconds) -> the matching Refusal."""
    if state.revoked:
        raise RevokedKey().about(state)
    if state.expires_at is not None and state.expires_at <= now:
        raise ExpiredKey().about(state)


class Holder(Protocol):
    """What authorisation reads of a caller: a key's state or a verified user token."""

    @property
    def org(self) -> str: ...

    @property
    def scopes(self) -> tuple[str, ...]: ...


def authorise(
    state: Holder,
    *,
    scopes: tuple[str, ...],
    org_param: str | None,
    params: Mapping[str, str],
    holder: str = "API key",
) -> None:
    """May this key (or user token: `holder` "token") use this route: its scopes (with
    wildcards), and the org named in the path."""
    held = state.scopes
    for wanted in scopes:
        # A scope held as such is the common case; wildcards go through the full rules.
        if wanted not in held and missing_scopes(held, (wanted,)):
            raise InsufficientScope(scopes, holder)
    if org_param is not None and params.get(org_param) != state.org:
        raise WrongOrg(f"The {holder} does not belong to the organisation named in the path.")


Headers = tuple[tuple[str, str], ...]

CREDENTIAL = istr("X-Keygate-Credential")
SUBJECT = istr("X-Keygate-Subject")
ORG = istr("X-Keygate-Org")
SCOPES = istr("X-Keygate-Scopes")
_KEY_ID = istr("X-Keygate-Key-Id")
_ENV = istr("X-Keygate-Env")


def identity_headers(state: KeyState) -> Headers:
    """The identity sent upstream, as header pairs: built on a state's first use and kept
    with it (`KeyState.identity`), so a request of a cached key allocates nothing here."""
    headers = state.identity
    if headers is None:
        headers = (
            _CREDENTIAL_KEY,
            _org_pair(state.org),
            (_KEY_ID, state.display_prefix),
            _scopes_pair(state.scopes),
            _env_pair(state.env),
        )
        # A memo on an immutable state, not a change of it (see KeyState.identity).
        object.__setattr__(state, "identity", headers)
    return headers


# Pairs that many keys share are built once: a state's headers then cost only its own
# key-id pair and the tuple holding the five (~220 B per cached key).
_CREDENTIAL_KEY = (CREDENTIAL, "key")


@functools.lru_cache(maxsize=4096)
def _org_pair(org: str) -> tuple[str, str]:
    return (ORG, org)


@functools.lru_cache(maxsize=4096)
def _scopes_pair(scopes: tuple[str, ...]) -> tuple[str, str]:
    return (SCOPES, " ".join(scopes))


@functools.lru_cache(maxsize=16)
def _env_pair(env: str) -> tuple[str, str]:
    return (_ENV, env)
