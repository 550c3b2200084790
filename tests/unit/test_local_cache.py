"""The in-process tier: TTL, the second-chance bound, proofs, and never an older state
(versions, tickets)."""

from __future__ import annotations

import pytest

from gateway.auth.local_cache import LocalKeyCache
from gateway.keys.state import KeyState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(key_id: str, version: int = 1, revoked: bool = False) -> KeyState:
    return KeyState(key_id, "acme", "kg_live_", "live", ("read",), None, revoked, version)


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = LocalKeyCache(ttl=5, max_entries=10, clock=clock)
    cache.put("a", state("a"), b"v", ticket=cache.ticket())
    clock.now += 4.9
    assert cache.get("a") is not None
    clock.now += 0.2
    assert cache.get("a") is None


def test_a_shorter_ttl_applies_to_new_entries() -> None:
    clock = Clock()
    cache = LocalKeyCache(ttl=5, max_entries=10, clock=clock)
    cache.ttl = 1.0  # the invalidation channel is down
    cache.put("a", state("a"), b"v", ticket=cache.ticket())
    clock.now += 1.1
    assert cache.get("a") is None


def test_verifiers_outlive_expired_and_evicted_entries() -> None:
    clock = Clock()
    cache = LocalKeyCache(ttl=5, max_entries=10, clock=clock)
    cache.put("a", state("a"), b"proof", ticket=cache.ticket())
    cache.evict("a")
    assert cache.get("a") is None
    assert cache.known_verifier("a") == b"proof"
    clock.now += 60
    assert cache.known_verifier("a") == b"proof"
    assert cache.known_verifier("b") is None


def test_size_is_bounded_and_an_entry_used_since_it_was_last_looked_at_stays() -> None:
    cache = LocalKeyCache(ttl=5, max_entries=3, clock=Clock())
    for key_id in "abc":
        cache.put(key_id, state(key_id), key_id.encode(), ticket=cache.ticket())
    assert cache.get("a") is not None  # a, the oldest, is marked used
    cache.put("d", state("d"), b"d", ticket=cache.ticket())
    assert len(cache) == 3
    assert cache.get("b") is None
    assert cache.get("a") is not None
    cache.put("e", state("e"), b"e", ticket=cache.ticket())
    assert cache.known_verifier("b") is None  # verifiers are bounded too


def test_keys_in_steady_use_survive_a_stream_of_keys_used_once() -> None:
    # Second chance: 50 hot keys read between every two one-off keys keep their entries
    # through 10,000 one-offs in a cache of 100; each one-off is evicted in its turn.
    clock = Clock()
    cache = LocalKeyCache(ttl=1e9, max_entries=100, clock=clock)
    hot = [f"hot{i}" for i in range(50)]
    for key_id in hot:
        cache.put(key_id, state(key_id), b"v", ticket=cache.ticket())
        cache.put_proof(key_id, key_id.encode())
    for n in range(10_000):
        cache.put(f"once{n}", state(f"once{n}"), b"v", ticket=cache.ticket())
        for key_id in hot[n % 5 :: 5]:  # each hot key read every 5th one-off
            assert cache.proven(key_id, key_id.encode()) == state(key_id)
    assert len(cache) == 100
    assert all(key_id in cache for key_id in hot)
    assert "once9999" in cache and "once0" not in cache


def test_proofs_outlive_entries_and_are_bounded_oldest_first() -> None:
    clock = Clock()
    cache = LocalKeyCache(ttl=5, max_entries=2, clock=clock)
    cache.put("a", state("a"), b"v", ticket=cache.ticket())
    cache.put_proof("a", b"pa")
    assert cache.proven("a", b"pa") == state("a")
    assert cache.proven("a", b"pb") is None  # another string with the same id
    cache.evict("a")
    assert cache.proven("a", b"pa") is None  # no state: the full path decides
    cache.put("a", state("a"), b"v", ticket=cache.ticket())
    assert cache.proven("a", b"pa") == state("a")  # the key's string never changes
    clock.now += 5.1
    assert cache.proven("a", b"pa") is None  # the state's TTL still applies
    for key_id in "abc":
        cache.put(key_id, state(key_id), b"v", ticket=cache.ticket())
    cache.put_proof("b", b"pb")
    cache.put_proof("a", b"pa")  # re-proven: now the newest
    cache.put_proof("c", b"pc")  # over the bound: b, the oldest proof, goes
    assert cache.proven("b", b"pb") is None
    assert cache.proven("c", b"pc") == state("c")


# Each row: what happens between a lookup taking its ticket and its put, the version it
# read, and whether its put may land. No interleaving may cache an older state.
@pytest.mark.parametrize(
    ("between", "read_version", "lands"),
    [
        ([], 1, True),
        ([("invalidate", 2)], 1, False),  # revoked while the lookup was in flight
        ([("invalidate", 2)], 2, False),  # even the new version: read before the change?
        ([("invalidate", None)], 1, False),  # a bare id (older build): version unknown
        ([("clear", None)], 1, False),  # the channel was lost: nothing older is kept
        ([("evict", None)], 1, True),  # a plain refresh refuses nothing
        ([("newer", 3)], 2, False),  # another lookup already cached a newer state
        ([("newer", 2)], 2, True),
    ],
)
def test_no_put_replaces_a_newer_state(
    between: list[tuple[str, int | None]], read_version: int, lands: bool
) -> None:
    cache = LocalKeyCache(ttl=5, max_entries=10, clock=Clock())
    cache.put("a", state("a", 1), b"v", ticket=cache.ticket())
    ticket = cache.ticket()  # the lookup starts reading Redis / Postgres
    for action, version in between:
        if action == "invalidate":
            cache.invalidate("a", version)
        elif action == "clear":
            cache.clear()
        elif action == "evict":
            cache.evict("a")
        else:
            assert version is not None
            assert cache.put("a", state("a", version), b"v", ticket=cache.ticket())
    assert cache.put("a", state("a", read_version), b"v", ticket=ticket) is lands
    entry = cache.get("a")
    if lands:
        assert entry is not None and entry.state == state("a", read_version)
    else:
        assert entry is None or entry.state is None or entry.state.version > read_version


def test_after_an_invalidation_only_that_version_or_newer_is_believed() -> None:
    cache = LocalKeyCache(ttl=5, max_entries=10, clock=Clock())
    cache.invalidate("a", 4)
    assert cache.floor("a") == 4
    assert not cache.put("a", state("a", 3), b"v", ticket=cache.ticket())  # stale Redis
    assert cache.put("a", state("a", 4, revoked=True), b"v", ticket=cache.ticket())
    cache.invalidate("a", None)  # a bare id keeps the floor it had
    assert cache.floor("a") == 4


@pytest.mark.parametrize(
    ("cached", "announced", "kept"),
    [
        (2, 2, True),  # the change's own state (a re-sync announcing it again)
        (3, 2, True),  # newer than the announcement
        (1, 2, False),  # older: evicted
        (2, None, False),  # a bare id: the version is unknown, so evicted
        (None, 1, False),  # an unknown id's entry: the key may exist now
    ],
)
def test_an_invalidation_evicts_only_an_entry_older_than_it(
    cached: int | None, announced: int | None, kept: bool
) -> None:
    cache = LocalKeyCache(ttl=5, max_entries=10, clock=Clock())
    cache.put("a", None if cached is None else state("a", cached), ticket=cache.ticket())
    cache.invalidate("a", announced)
    entry = cache.get("a")
    assert (entry is not None) is kept
    if announced is not None:
        assert cache.floor("a") == announced


def test_a_dropped_marker_still_refuses_lookups_begun_before_it() -> None:
    cache = LocalKeyCache(ttl=5, max_entries=2, clock=Clock())
    ticket = cache.ticket()
    cache.invalidate("a", 2)
    cache.invalidate("b", 2)
    cache.invalidate("c", 2)  # over the bound: a's marker is dropped
    assert cache.floor("a") == 0
    assert not cache.put("a", state("a", 1), b"v", ticket=ticket)
    assert cache.put("a", state("a", 1), b"v", ticket=cache.ticket())  # begun after: fine


def test_a_refused_put_still_learns_the_verifier() -> None:
    # A secret never changes: the proof it is right outlives any state.
    cache = LocalKeyCache(ttl=5, max_entries=10, clock=Clock())
    ticket = cache.ticket()
    cache.invalidate("a", 2)
    assert not cache.put("a", state("a", 1), b"proof", ticket=ticket)
    assert cache.known_verifier("a") == b"proof"


def test_reads_late_in_an_entrys_life_ask_for_a_refresh_at_a_jittered_point() -> None:
    clock = Clock()
    due: list[str] = []
    cache = LocalKeyCache(ttl=100, max_entries=1000, clock=clock, on_refresh_due=due.append)
    for i in range(200):
        cache.put(f"k{i}", state(f"k{i}"), b"v", ticket=cache.ticket())
        cache.put_proof(f"k{i}", b"p")
    clock.now += 69.9  # before 70 %: nobody asks
    assert all(cache.get(f"k{i}") is not None for i in range(200))
    assert due == []
    clock.now += 10  # 79.9 %: some entries are due, not all (spread over 70-90 %)
    assert all(cache.proven(f"k{i}", b"p") is not None for i in range(200))
    assert 0 < len(due) < 200
    due.clear()
    clock.now += 10.2  # past 90 %: every read asks, and still serves the entry
    assert all(cache.proven(f"k{i}", b"p") is not None for i in range(200))
    assert sorted(due) == sorted(f"k{i}" for i in range(200))
    clock.now += 10  # expired: gone, and nothing to refresh
    due.clear()
    assert cache.get("k0") is None
    assert due == []


def test_a_refreshed_entry_starts_a_new_life() -> None:
    clock = Clock()
    due: list[str] = []
    cache = LocalKeyCache(ttl=100, max_entries=10, clock=clock, on_refresh_due=due.append)
    cache.put("a", state("a"), b"v", ticket=cache.ticket())
    clock.now += 95
    assert cache.get("a") is not None and due == ["a"]
    cache.put("a", state("a"), b"v", ticket=cache.ticket())  # the refresh's put
    clock.now += 60  # past the first entry's expiry, before the refreshed one's 70 %
    assert cache.get("a") is not None
    assert due == ["a"]
