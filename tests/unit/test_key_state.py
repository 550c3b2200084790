"""KeyState's JSON in Redis carries the rate limit; entries written before it are misses;
the identity headers kept with a state."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gateway.auth.authenticate import identity_headers
from gateway.keys.rate_limits import RateLimit
from gateway.keys.state import KeyState
from gateway.store.key_cache import (
    invalidation,
    parse_invalidation,
    parse_invalidations,
    state_from_json,
    state_to_json,
)


@pytest.mark.parametrize("limit", [None, RateLimit(100, 60), RateLimit(1, 86400)])
def test_state_round_trips_through_json(limit: RateLimit | None) -> None:
    state = KeyState("a1B2c3D4", "acme", "kg_live_", "live", ("read",), 1.9e9, False, 3, limit)
    assert state_from_json(state_to_json(state)) == state


def test_entry_written_before_rate_limits_reads_as_a_miss() -> None:
    # An older build writes this shape at the same version: "no limit" could be wrong.
    old = {
        "id": "a1B2c3D4",
        "org": "acme",
        "prefix": "kg_live_",
        "env": "live",
        "scopes": ["read"],
        "expires_at": None,
        "revoked": False,
        "version": 2,
    }
    assert state_from_json(json.dumps(old)) is None
    assert state_from_json(json.dumps({**old, "rate_limit": None})) is not None


def test_limit_is_part_of_equality() -> None:
    plain = KeyState("a1B2c3D4", "acme", "kg_live_", "live", ("read",), None, False, 3)
    limited = KeyState(
        "a1B2c3D4", "acme", "kg_live_", "live", ("read",), None, False, 3, RateLimit(5, 60)
    )
    assert plain != limited


@pytest.mark.parametrize(
    ("message", "parsed"),
    [
        (invalidation("a1B2c3D4", 7), ("a1B2c3D4", 7)),
        ("a1B2c3D4:12", ("a1B2c3D4", 12)),
        ("a1B2c3D4", ("a1B2c3D4", None)),  # a build before versions: version unknown
        ("a1B2c3D4:", ("a1B2c3D4", None)),
        ("a1B2c3D4:x", ("a1B2c3D4", None)),
        ("a1B2c3D4:-1", ("a1B2c3D4", None)),
    ],
)
def test_invalidation_messages(message: str, parsed: tuple[str, int | None]) -> None:
    assert parse_invalidation(message) == parsed


def test_a_statement_announces_its_keys_together() -> None:
    assert parse_invalidations("a1B2c3D4:3") == [("a1B2c3D4", 3)]
    assert parse_invalidations("a1B2c3D4:3 b1B2c3D4:9 c1B2c3D4") == [
        ("a1B2c3D4", 3),
        ("b1B2c3D4", 9),
        ("c1B2c3D4", None),
    ]
    assert parse_invalidations("") == []


def test_identity_headers_are_built_once_per_state_and_never_carried_to_another() -> None:
    state = KeyState("a1B2c3D4", "acme", "kg_live_", "live", ("read", "write"), None, False, 3)
    headers = identity_headers(state)
    assert dict(headers) == {
        "X-Keygate-Credential": "key",
        "X-Keygate-Org": "acme",
        "X-Keygate-Key-Id": "kg_live_a1B2c3D4",
        "X-Keygate-Scopes": "read write",
        "X-Keygate-Env": "live",
    }
    assert identity_headers(state) is headers  # kept with the state: nothing rebuilt
    # The memo is not part of the state's value: an equal state read anew compares equal.
    fresh = KeyState("a1B2c3D4", "acme", "kg_live_", "live", ("read", "write"), None, False, 3)
    assert fresh == state and hash(fresh) == hash(state) and "identity" not in repr(state)
    # A changed key is a new state, whose headers say what changed.
    narrowed = dataclasses.replace(state, scopes=("read",), version=4)
    assert narrowed.identity is None
    assert dict(identity_headers(narrowed))["X-Keygate-Scopes"] == "read"
    assert dict(identity_headers(state))["X-Keygate-Scopes"] == "read write"
