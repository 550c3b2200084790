"""Negative caching of key ids: gaps in the sorted id space known to hold no key.

A lookup of an unknown id learns, in the same Postgres round trip, the nearest existing
ids below and above it (as DNSSEC's NSEC records do) and caches that open interval as
empty. Any later unknown id inside a cached gap is refused without Redis or Postgres. With
N keys there are N+1 gaps, so a scan of random well-formed keys costs at most N+1 queries
per TTL whatever its length, and unknown ids never take room in the positive LRU.

Ids are compared as Python compares strings (by code point); Postgres must order them the
same way, hence `COLLATE "C"` in the gap query (queries.find_key_or_gap, migration 0007).

Guards, as in local_cache:

- A gap is dropped when a key inside it is created (`invalidate`, from either channel).
- Tickets: a lookup takes one before its Postgres read, and its gap is refused when an id
  heard since the ticket falls inside it (the read may predate that key). Only ids inside
  the gap refuse it, so a churn of revocations elsewhere does not defeat the cache; past
  the bounded history of recent ids, every older ticket is refused.
- `clear()` (no invalidation channel left) drops every gap and refuses older tickets.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import NamedTuple

Ticket = int
# Ids heard recently, to judge the gaps of lookups in flight (a read takes milliseconds;
# beyond this many changes meanwhile, the gap is simply refused and read again).
_HISTORY = 1024


class Gap(NamedTuple):
    """No key id lies strictly between `below` and `above` (None: unbounded)."""

    below: str | None
    above: str | None
    expires: float


class UnknownIds:
    def __init__(
        self, ttl: float, max_gaps: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_gaps = max_gaps
        self.clock = clock
        # By lower bound ("" for an unbounded one: every id is above it), least recently
        # used first; `_starts` holds the same bounds sorted, for bisect. Gaps never overlap.
        self._gaps: OrderedDict[str, Gap] = OrderedDict()
        self._starts: list[str] = []
        self._generation: Ticket = 0
        self._heard: deque[tuple[Ticket, str]] = deque(maxlen=_HISTORY)
        self._refuse_before: Ticket = 0

    # ------------------------------------------------------------------ reads

    def covers(self, key_id: str) -> bool:
        """True when `key_id` is known (and recently enough) to hold no key."""
        start = self._containing(key_id)
        if start is None:
            return False
        if self._gaps[start].expires <= self.clock():
            self._remove(start)
            return False
        self._gaps.move_to_end(start)
        return True

    def ticket(self) -> Ticket:
        """Take just before the Postgres read whose gap is handed to `put`."""
        return self._generation

    # ------------------------------------------------------------------ writes

    def put(self, below: str | None, above: str | None, *, ticket: Ticket) -> bool:
        """Cache the gap (below, above) read by a lookup that took `ticket`; False (nothing
        cached) when an id heard since then lies inside it, or history cannot tell."""
        if ticket < self._refuse_before:
            return False
        heard = self._heard
        if self._generation > ticket and (not heard or heard[0][0] > ticket + 1):
            return False  # some of what was heard since the ticket has left the history
        for generation, key_id in reversed(heard):
            if generation <= ticket:
                break
            if _inside(key_id, below, above):
                return False
        start = below or ""
        # Drop what the new gap overlaps (gaps read before a key was deleted, say): the
        # newest reading of the table wins, and gaps stay disjoint for bisect.
        i = bisect.bisect_right(self._starts, start) - 1  # the last gap starting at or below
        if i < 0 or _before(self._gaps[self._starts[i]].above, start):
            i += 1
        while i < len(self._starts) and (above is None or self._starts[i] < above):
            self._remove(self._starts[i])
        bisect.insort(self._starts, start)
        self._gaps[start] = Gap(below, above, self.clock() + self.ttl)
        while len(self._gaps) > self.max_gaps:
            oldest = next(iter(self._gaps))
            self._remove(oldest)
        return True

    def invalidate(self, key_id: str) -> None:
        """`key_id` changed (was created, perhaps): drop the gap holding it, and refuse
        the gaps of lookups in flight that would hold it."""
        self._generation += 1
        self._heard.append((self._generation, key_id))
        start = self._containing(key_id)
        if start is not None:
            self._remove(start)

    def clear(self) -> None:
        """Drop every gap, and refuse every gap read by a lookup begun before."""
        self._generation += 1
        self._refuse_before = self._generation
        self._gaps.clear()
        self._starts.clear()
        self._heard.clear()

    def __len__(self) -> int:
        return len(self._gaps)

    # ------------------------------------------------------------------ internals

    def _containing(self, key_id: str) -> str | None:
        """The start of the cached gap holding `key_id` (expired or not), or None."""
        i = bisect.bisect_left(self._starts, key_id) - 1  # the last start below the id
        if i < 0:
            return None
        start = self._starts[i]
        above = self._gaps[start].above
        return start if above is None or key_id < above else None

    def _remove(self, start: str) -> None:
        del self._gaps[start]
        del self._starts[bisect.bisect_left(self._starts, start)]


def _inside(key_id: str, below: str | None, above: str | None) -> bool:
    return (below is None or below < key_id) and (above is None or key_id < above)


def _before(above: str | None, start: str) -> bool:
    """A gap ending at `above` lies wholly before a gap starting at `start`."""
    return above is not None and above <= start
