"""KeyState: what the gateway knows about a key when it decides a request. Never the secret.

Every tier of the key cache holds KeyStates (serialised by `gateway.store.key_cache`); the
`version` is the row's, bumped by every change in Postgres, and orders the states of one
key: no tier ever replaces a newer state with an older one.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field

from gateway.keys.models import ApiKey
from gateway.keys.rate_limits import RateLimit


@dataclass(frozen=True, slots=True)
class KeyState:
    id: str
    org: str
    prefix: str
    env: str
    scopes: tuple[str, ...]
    expires_at: float | None  # unix seconds
    revoked: bool
    version: int
    rate_limit: RateLimit | None = None
    # The identity headers sent upstream for this state, kept with it once built
    # (`gateway.auth.authenticate.identity_headers`): a state never changes, so they never
    # go stale, and a cached key's request allocates none. Not part of the state's value.
    identity: tuple[tuple[str, str], ...] | None = field(
        default=None, init=False, compare=False, repr=False
    )

    @property
    def display_prefix(self) -> str:
        return self.prefix + self.id

    def __hash__(self) -> int:
        # Equal states share id and version: hashing those two is enough, and cheaper
        # than the generated hash over every field.
        return hash((self.id, self.version))

    @classmethod
    def of(cls, key: ApiKey) -> KeyState:
        return cls(
            id=key.id,
            org=sys.intern(key.org),
            prefix=sys.intern(key.prefix),
            env=sys.intern(key.env),
            scopes=shared_scopes(key.scopes),
            expires_at=key.expires_at.timestamp() if key.expires_at else None,
            revoked=key.revoked_at is not None,
            version=key.version,
            rate_limit=key.rate_limit,
        )


@functools.lru_cache(maxsize=4096)
def shared_scopes(scopes: tuple[str, ...]) -> tuple[str, ...]:
    """One tuple for all the states that hold these scopes. Keys share a few sets of
    scopes, and a state read from a store would otherwise carry its own copy: with the
    org, prefix and env strings interned too, that is ~330 B less per cached key."""
    return tuple(sys.intern(scope) for scope in scopes)
