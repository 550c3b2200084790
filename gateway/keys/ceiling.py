"""A key principal's ceiling: it can never grant, keep or lift more than it holds itself.

An API key acting on the admin surfaces (an `Actor` with `org` set) is bounded by its own
key, measure by measure:

  scopes      every scope granted or held is one it holds (wildcards as on the proxy)
  expiry      no later than its own expiry; if it expires, "no expiry" is refused
  rate limit  if it has one, never none and never looser (rate_limits.no_looser)
  env         a `test` key acts only on `test` keys; a `live` key on both

`check_new_*` judge what a write would set; `check_target` judges a key the actor would
update, roll or revoke, which must lie wholly inside the ceiling. Root and CLI actors
have no ceiling. Pure: no I/O, tested with tables in tests/unit/test_ceiling.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.keys.errors import Forbidden, ScopeNotHeld
from gateway.keys.models import Actor, ApiKey
from gateway.keys.rate_limits import RateLimit, no_looser
from gateway.keys.scopes import missing_scopes

TEST_ENV = "test"


def check_new_scopes(actor: Actor, scopes: tuple[str, ...]) -> None:
    """403 scope_not_held if a key would get a scope the acting key lacks."""
    if not actor.is_key:
        return
    not_held = missing_scopes(actor.scopes, scopes)
    if not_held:
        raise ScopeNotHeld(
            f"cannot grant scopes the acting key does not hold: {' '.join(not_held)}",
            "scopes",
        )


def check_new_expiry(actor: Actor, expiry: datetime | None, field: str, verb: str) -> None:
    """403 if a key the actor `verb`s ("creates", "rolls") would outlive the actor."""
    if not actor.is_key or actor.expires_at is None:
        return
    own = _time(actor.expires_at)
    if expiry is None:
        raise Forbidden(
            f"{field}: the acting key expires at {own}; a key it {verb} must expire too, "
            f"no later than that",
            field,
        )
    if expiry > actor.expires_at:
        raise Forbidden(
            f"{field}: the acting key expires at {own}; a key it {verb} cannot outlive it "
            f"(asked for {_time(expiry)})",
            field,
        )


def check_new_rate_limit(actor: Actor, limit: RateLimit | None, verb: str) -> None:
    """403 if a key the actor `verb`s ("creates", "updates") would be limited less."""
    own = actor.rate_limit
    if not actor.is_key or own is None:
        return
    if limit is None:
        raise Forbidden(
            f"rate_limit: the acting key is limited to {own}; a key it {verb} needs a limit "
            f"no looser (none is looser)",
            "rate_limit",
        )
    if not no_looser(limit, own):
        raise Forbidden(
            f"rate_limit: {limit} is looser than the acting key's own {own}; a key it {verb} "
            f"may allow at most {own.requests} requests in one window and no more on average",
            "rate_limit",
        )


def check_new_env(actor: Actor, env: str) -> None:
    """403 if a `test` key would make a key of another env (`live`)."""
    if actor.is_key and actor.env == TEST_ENV and env != TEST_ENV:
        raise Forbidden(f"env: the acting key is a test key; it cannot make {env} keys", "env")


def check_target(actor: Actor, key: ApiKey, action: str) -> None:
    """403 unless `key` lies inside the actor's ceiling, so it may `action` it at all.

    Updating, rolling and revoking need the same ceiling: a key may act only on keys that
    hold nothing it does not hold itself.
    """
    if not actor.is_key:
        return
    who = f"key {key.display_prefix}"
    not_held = missing_scopes(actor.scopes, key.scopes)
    if not_held:
        raise ScopeNotHeld(
            f"scopes: {who} holds scopes the acting key does not hold ({' '.join(not_held)}); "
            f"it cannot {action} it",
            "scopes",
        )
    if actor.env == TEST_ENV and key.env != TEST_ENV:
        raise Forbidden(
            f"env: {who} is a {key.env} key and the acting key a test key; it cannot {action} it",
            "env",
        )
    if actor.expires_at is not None and (
        key.expires_at is None or key.expires_at > actor.expires_at
    ):
        theirs = (
            "never expires" if key.expires_at is None else f"expires at {_time(key.expires_at)}"
        )
        raise Forbidden(
            f"expires_at: {who} {theirs} and the acting key expires at "
            f"{_time(actor.expires_at)}; it cannot {action} a key that outlives it",
            "expires_at",
        )
    own = actor.rate_limit
    if own is not None and (key.rate_limit is None or not no_looser(key.rate_limit, own)):
        theirs = (
            "has no rate limit" if key.rate_limit is None else f"is limited to {key.rate_limit}"
        )
        raise Forbidden(
            f"rate_limit: {who} {theirs} and the acting key to {own}; it cannot {action} "
            f"a key limited less than itself",
            "rate_limit",
        )


def _time(value: datetime) -> str:
    """Whole seconds, UTC: copying it back as an expiry never exceeds the real one."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
