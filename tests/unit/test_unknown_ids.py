"""Negative caching as gaps: bisect over open intervals, bounds, TTL, invalidation, tickets."""

from __future__ import annotations

import bisect
import random

import pytest

from gateway.auth.unknown_ids import UnknownIds
from gateway.keys.format import random_base62


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gaps(ttl: float = 60, max_gaps: int = 100) -> tuple[UnknownIds, Clock]:
    clock = Clock()
    return UnknownIds(ttl, max_gaps, clock=clock), clock


@pytest.mark.parametrize(
    ("below", "above", "inside", "outside"),
    [
        ("B", "D", ["C", "Bz", "Czzzzzzz", "B0"], ["B", "D", "A", "E", "Da", "Az"]),
        (None, "D", ["0", "A", "Czz"], ["D", "Da", "a"]),
        ("B", None, ["C", "a", "zzzzzzzz", "Ba"], ["B", "A", "0"]),
        (None, None, ["0", "Zz", "zzzzzzzz"], []),
        # Code-point order: every upper-case letter sorts before every lower-case one.
        ("Zzzzzzzz", "a0000000", ["Zzzzzzzz0", "a", "a000000"], ["b", "Y", "a0000000"]),
    ],
)
def test_a_gap_covers_exactly_the_ids_strictly_between_its_bounds(
    below: str | None, above: str | None, inside: list[str], outside: list[str]
) -> None:
    cache, _ = gaps()
    assert cache.put(below, above, ticket=cache.ticket())
    assert [i for i in inside if not cache.covers(i)] == []
    assert [o for o in outside if cache.covers(o)] == []


def test_many_gaps_agree_with_a_brute_force_scan() -> None:
    rng = random.Random(7)
    known = sorted({random_base62(8) for _ in range(300)})
    bounds: list[str | None] = [None, *known, None]
    cache, _ = gaps(max_gaps=1000)
    learnt = set(rng.sample(range(len(bounds) - 1), 200))  # 200 of the 301 gaps
    for i in learnt:
        assert cache.put(bounds[i], bounds[i + 1], ticket=cache.ticket())
    assert len(cache) == 200
    for probe in [*known, *(random_base62(8) for _ in range(3000))]:
        gap = bisect.bisect_left(known, probe)  # the gap between known[gap-1] and known[gap]
        expected = probe not in known and gap in learnt
        assert cache.covers(probe) == expected, probe


def test_gaps_expire_after_the_ttl_and_a_shorter_ttl_applies_to_new_ones() -> None:
    cache, clock = gaps(ttl=60)
    cache.put("B", "D", ticket=cache.ticket())
    clock.now += 59.9
    assert cache.covers("C")
    clock.now += 0.2
    assert not cache.covers("C")
    assert len(cache) == 0  # dropped when found expired
    cache.ttl = 1.0  # no invalidation channel live
    cache.put("B", "D", ticket=cache.ticket())
    clock.now += 1.1
    assert not cache.covers("C")


def test_size_is_bounded_least_recently_used_first() -> None:
    cache, _ = gaps(max_gaps=3)
    for below, above in (("A", "C"), ("C", "E"), ("E", "G")):
        cache.put(below, above, ticket=cache.ticket())
    assert cache.covers("B")  # A-C is now the most recently used
    cache.put("G", "I", ticket=cache.ticket())
    assert len(cache) == 3
    assert not cache.covers("D")  # C-E, the least recently used, went
    assert cache.covers("B") and cache.covers("F") and cache.covers("H")


def test_an_invalidation_inside_a_gap_drops_it_and_one_outside_does_not() -> None:
    cache, _ = gaps()
    cache.put("B", "D", ticket=cache.ticket())
    cache.put("F", "H", ticket=cache.ticket())
    cache.invalidate("D")  # an existing key (the bound) changed: no gap holds it
    cache.invalidate("E")
    assert cache.covers("C") and cache.covers("G")
    cache.invalidate("C")  # created inside B-D
    assert not cache.covers("Bz") and not cache.covers("Cz")
    assert cache.covers("G")


def test_a_gap_read_before_an_invalidation_inside_it_is_refused() -> None:
    cache, _ = gaps()
    ticket = cache.ticket()  # the lookup reads Postgres: no key between B and D yet
    cache.invalidate("C")  # meanwhile C is created, and heard
    assert not cache.put("B", "D", ticket=ticket)
    assert not cache.covers("C")
    assert cache.put("B", "C", ticket=cache.ticket())  # a read after it is cached


def test_a_gap_read_before_invalidations_elsewhere_is_still_cached() -> None:
    cache, _ = gaps()
    ticket = cache.ticket()
    for key_id in ("A", "D", "E", "Z"):  # revocations of other keys, say
        cache.invalidate(key_id)
    assert cache.put("B", "D", ticket=ticket)
    assert cache.covers("C")


def test_beyond_its_history_every_older_ticket_is_refused() -> None:
    cache, _ = gaps()
    ticket = cache.ticket()
    for n in range(2000):  # more changes than are remembered, all far from B-D
        cache.invalidate(f"Z{n:07d}")
    assert not cache.put("B", "D", ticket=ticket)
    assert cache.put("B", "D", ticket=cache.ticket())


def test_clear_drops_every_gap_and_refuses_reads_begun_before() -> None:
    cache, _ = gaps()
    cache.put("B", "D", ticket=cache.ticket())
    ticket = cache.ticket()
    cache.clear()  # the last invalidation channel is lost
    assert len(cache) == 0 and not cache.covers("C")
    assert not cache.put("F", "H", ticket=ticket)
    assert cache.put("F", "H", ticket=cache.ticket())


def test_a_newer_reading_replaces_the_gaps_it_overlaps() -> None:
    cache, _ = gaps()
    cache.put("B", "D", ticket=cache.ticket())
    cache.put("D", "F", ticket=cache.ticket())
    cache.put("H", "J", ticket=cache.ticket())
    cache.put(None, "A", ticket=cache.ticket())
    # D was deleted behind the gateways' backs: the table now reads B..F as one gap.
    cache.put("B", "F", ticket=cache.ticket())
    assert len(cache) == 3
    assert cache.covers("D") and cache.covers("C") and cache.covers("E")
    assert cache.covers("I") and cache.covers("0")
    # A gap that starts inside another replaces it too, and never leaves overlaps behind.
    cache.put("C", "I", ticket=cache.ticket())
    assert len(cache) == 2  # None..A and C..I
    assert not cache.covers("B0") and cache.covers("H") and not cache.covers("Ia")
