"""KeyState's JSON in Redis carries the rate limit; entries written before it are misses."""

from __future__ import annotations

import json

import pytest

from gateway.keys.rate_limits import RateLimit
from gateway.store.key_cache import KeyState


@pytest.mark.parametrize("limit", [None, RateLimit(100, 60), RateLimit(1, 86400)])
def test_state_round_trips_through_json(limit: RateLimit | None) -> None:
    state = KeyState("a1B2c3D4", "acme", "kg_live_", "live", ("read",), 1.9e9, False, 3, limit)
    assert KeyState.from_json(state.to_json()) == state


def test_entry_written_before_rate_limits_reads_as_a_miss() -> None:
    # An older build writes this shape at the same version: "no limit" could be wrong.
    old = {"id": "a1B2c3D4", "org": "acme", "prefix": "kg_live_", "env": "live",
           "scopes": ["read"], "expires_at": None, "revoked": False, "version": 2}
    assert KeyState.from_json(json.dumps(old)) is None
    assert KeyState.from_json(json.dumps({**old, "rate_limit": None})) is not None


def test_limit_is_part_of_equality() -> None:
    plain = KeyState("a1B2c3D4", "acme", "kg_live_", "live", ("read",), None, False, 3)
    limited = KeyState("a1B2c3D4", "acme", "kg_live_", "live", ("read",), None, False, 3,
                       RateLimit(5, 60))
    assert plain != limited
