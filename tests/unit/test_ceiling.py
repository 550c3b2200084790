"""A key principal's ceiling (gateway/keys/ceiling.py) and the rate-limit order, as tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.keys import ceiling
from gateway.keys.errors import Forbidden, ScopeNotHeld
from gateway.keys.models import Actor, ApiKey
from gateway.keys.rate_limits import RateLimit, no_looser

NOW = datetime(2026, 12, 1, tzinfo=UTC)
OWN_EXPIRY = datetime(2027, 1, 1, tzinfo=UTC)
OWN_LIMIT = RateLimit(100, 60)
BOUND = Actor(
    principal="key:kg_live_aaaaaaaa",
    org="acme",
    scopes=("keys:manage", "read"),
    env="live",
    expires_at=OWN_EXPIRY,
    rate_limit=OWN_LIMIT,
)
UNBOUND = [Actor(principal="root"), Actor(principal="cli:ops")]


@pytest.mark.parametrize(
    ("limit", "ceiling_", "within"),
    [
        (RateLimit(100, 60), RateLimit(100, 60), True),  # equal
        (RateLimit(50, 60), RateLimit(100, 60), True),  # fewer per window
        (RateLimit(100, 3600), RateLimit(100, 60), True),  # same burst, slower
        (RateLimit(1, 1), RateLimit(100, 60), True),  # 60/min, burst 1
        (RateLimit(200, 120), RateLimit(100, 60), False),  # same rate, bigger burst
        (RateLimit(1000, 3600), RateLimit(100, 60), False),  # slower, 10x the burst
        (RateLimit(10, 1), RateLimit(100, 60), False),  # smaller burst, 6x the rate
        (RateLimit(101, 60), RateLimit(100, 60), False),
        (RateLimit(100, 59), RateLimit(100, 60), False),
        (RateLimit(1_000_000_000, 1), RateLimit(1_000_000_000, 1), True),
        (RateLimit(1_000_000_000, 365 * 86400), RateLimit(1, 1), False),
    ],
)
def test_no_looser(limit: RateLimit, ceiling_: RateLimit, within: bool) -> None:
    assert no_looser(limit, ceiling_) is within


def test_no_looser_is_a_partial_order() -> None:
    limits = [RateLimit(r, p) for r in (1, 5, 60, 100, 1000) for p in (1, 60, 3600)]
    for a in limits:
        assert no_looser(a, a)
        for b in limits:
            if no_looser(a, b) and no_looser(b, a):
                assert a == b
            for c in limits:
                if no_looser(a, b) and no_looser(b, c):
                    assert no_looser(a, c)


def _refusal(call: object) -> Forbidden | None:
    assert callable(call)
    try:
        call()
    except Forbidden as exc:
        return exc
    return None


NEW_EXPIRY = [
    # expiry, field, refused, words the message must hold
    (OWN_EXPIRY - timedelta(days=1), "expires_at", False, ()),
    (OWN_EXPIRY, "expires_at", False, ()),
    (
        OWN_EXPIRY + timedelta(microseconds=1),
        "expires_at",
        True,
        ("expires_at:", "2027-01-01T00:00:00Z", "cannot outlive"),
    ),
    (NOW + timedelta(days=36500), "expires_in", True, ("expires_in:", "2027-01-01T00:00:00Z")),
    (None, "expires_at", True, ("expires_at:", "2027-01-01T00:00:00Z", "must expire")),
]


@pytest.mark.parametrize(("expiry", "field", "refused", "words"), NEW_EXPIRY)
def test_new_expiry(
    expiry: datetime | None, field: str, refused: bool, words: tuple[str, ...]
) -> None:
    exc = _refusal(lambda: ceiling.check_new_expiry(BOUND, expiry, field, "creates"))
    assert (exc is not None) is refused
    if exc is not None:
        assert exc.code == "forbidden" and exc.status == 403 and exc.field == field
        assert all(w in exc.message for w in words), exc.message
    for actor in [*UNBOUND, replace(BOUND, expires_at=None)]:
        ceiling.check_new_expiry(actor, expiry, field, "creates")


NEW_LIMIT = [
    (RateLimit(100, 60), False),
    (RateLimit(10, 60), False),
    (RateLimit(100, 3600), False),
    (None, True),
    (RateLimit(101, 60), True),
    (RateLimit(10, 1), True),
    (RateLimit(1000, 3600), True),
]


@pytest.mark.parametrize(("limit", "refused"), NEW_LIMIT)
def test_new_rate_limit(limit: RateLimit | None, refused: bool) -> None:
    exc = _refusal(lambda: ceiling.check_new_rate_limit(BOUND, limit, "updates"))
    assert (exc is not None) is refused
    if exc is not None:
        assert exc.code == "forbidden" and exc.field == "rate_limit"
        assert exc.message.startswith("rate_limit: ") and "100/1m" in exc.message
    for actor in [*UNBOUND, replace(BOUND, rate_limit=None)]:
        ceiling.check_new_rate_limit(actor, limit, "updates")


@pytest.mark.parametrize(
    ("actor_env", "env", "refused"),
    [
        ("live", "live", False),
        ("live", "test", False),
        ("test", "test", False),
        ("test", "live", True),
    ],
)
def test_new_env(actor_env: str, env: str, refused: bool) -> None:
    exc = _refusal(lambda: ceiling.check_new_env(replace(BOUND, env=actor_env), env))
    assert (exc is not None) is refused
    if exc is not None:
        assert exc.code == "forbidden" and exc.field == "env"


def test_new_scopes() -> None:
    ceiling.check_new_scopes(BOUND, ("read",))
    with pytest.raises(ScopeNotHeld) as info:
        ceiling.check_new_scopes(BOUND, ("read", "billing"))
    assert info.value.code == "scope_not_held" and "billing" in info.value.message
    wild = replace(BOUND, scopes=("keys:manage", "workflows:*"))
    ceiling.check_new_scopes(wild, ("workflows:run",))
    with pytest.raises(ScopeNotHeld):
        ceiling.check_new_scopes(wild, ("*",))
    for actor in UNBOUND:
        ceiling.check_new_scopes(actor, ("*",))


def _key(**changes: object) -> ApiKey:
    base = ApiKey(
        id="bbbbbbbb",
        org="acme",
        name="k",
        prefix="kg_live_",
        env="live",
        scopes=("read",),
        metadata={},
        created_at=NOW,
        created_by="root",
        expires_at=OWN_EXPIRY,
        last_used_at=None,
        revoked_at=None,
        revoked_by=None,
        revoke_reason=None,
        rolled_from=None,
        version=1,
        rate_limit=RateLimit(100, 60),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


TARGETS = [
    # the target key, the refusal's (code, field) or None when the actor may act on it
    (_key(), None),
    (_key(scopes=("keys:manage", "read"), rate_limit=RateLimit(1, 1), expires_at=NOW), None),
    (_key(scopes=("read", "billing")), ("scope_not_held", "scopes")),
    (_key(scopes=("*",)), ("scope_not_held", "scopes")),
    (_key(expires_at=None), ("forbidden", "expires_at")),
    (_key(expires_at=OWN_EXPIRY + timedelta(seconds=1)), ("forbidden", "expires_at")),
    (_key(rate_limit=None), ("forbidden", "rate_limit")),
    (_key(rate_limit=RateLimit(200, 60)), ("forbidden", "rate_limit")),
    (_key(rate_limit=RateLimit(1000, 3600)), ("forbidden", "rate_limit")),
]


@pytest.mark.parametrize(("key", "refusal"), TARGETS)
def test_target(key: ApiKey, refusal: tuple[str, str] | None) -> None:
    for action in ("update", "roll", "revoke"):
        exc = _refusal(lambda: ceiling.check_target(BOUND, key, action))  # noqa: B023
        assert (None if exc is None else (exc.code, exc.field)) == refusal
        if exc is not None:
            assert f"cannot {action}" in exc.message and key.display_prefix in exc.message
    for actor in UNBOUND:
        ceiling.check_target(actor, key, "revoke")


def test_a_test_key_acts_on_test_keys_only() -> None:
    tester = replace(BOUND, env="test")
    ceiling.check_target(tester, _key(env="test", prefix="kg_test_"), "revoke")
    exc = _refusal(lambda: ceiling.check_target(tester, _key(), "revoke"))
    assert exc is not None and (exc.code, exc.field) == ("forbidden", "env")
    ceiling.check_target(BOUND, _key(env="test", prefix="kg_test_"), "revoke")
