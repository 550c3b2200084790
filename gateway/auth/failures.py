"""Limits on argon2 verifications of candidate secrets, per key id and per client.

Before a key's right secret has been seen, every candidate secret costs an argon2 verify
(~20 ms of CPU). Attempts are counted in a window per (key id, client address) and per key
id, and counted when they *start*: a verification reserves its place before it runs, so
a burst of concurrent candidates cannot all slip under the limit, and a client that goes
away mid-verify has still spent its attempt (only a right secret gives its place back).
One client flooding a key's public id is cut off after `max_failures`, without shutting
out the key's real user on another address; a flood spread over many addresses is cut off
for everyone after `max_failures * FLEET_FACTOR`, which bounds the CPU one key id can cost.
Once the right secret is seen, candidates are checked by the keyed hash without argon2 at
all, so a key in use is never affected.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FLEET_FACTOR = 10


class _WindowCounter:
    """Fixed windows per key, started by the key's first count; oldest keys dropped."""

    def __init__(self, window: float, max_tracked: int, clock: Callable[[], float]) -> None:
        self.window = window
        self.max_tracked = max_tracked
        self.clock = clock
        self._counts: OrderedDict[object, tuple[float, int]] = OrderedDict()

    def count(self, key: object) -> tuple[int, float]:
        """(count in the current window, seconds until that window ends)."""
        found = self._counts.get(key)
        if found is None:
            return 0, 0.0
        start, count = found
        left = start + self.window - self.clock()
        if left <= 0:
            del self._counts[key]
            return 0, 0.0
        return count, left

    def add(self, key: object) -> float:
        """Count one; returns the start of the window it was counted in."""
        now = self.clock()
        start, count = self._counts.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        self._counts[key] = (start, count + 1)
        self._counts.move_to_end(key)
        while len(self._counts) > self.max_tracked:
            self._counts.popitem(last=False)
        return start

    def remove(self, key: object, start: float) -> None:
        """Take back one count made in the window that began at `start` (if still open)."""
        found = self._counts.get(key)
        if found is not None and found[0] == start and found[1] > 0:
            self._counts[key] = (start, found[1] - 1)


@dataclass(frozen=True)
class Reservation:
    """One attempt's place in both windows; given back only for a right secret."""

    key_id: str
    client: str | None
    client_window: float
    key_window: float


class FailureLimiter:
    def __init__(
        self,
        window: float,
        max_failures: int,
        max_tracked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self._by_client = _WindowCounter(window, max_tracked, clock)
        self._by_key = _WindowCounter(window, max_tracked, clock)

    def retry_after(self, key_id: str, client: str | None = None) -> int | None:
        """Whole seconds until an attempt may start, or None when one may start now."""
        waits = []
        count, left = self._by_client.count((key_id, client))
        if count >= self.max_failures:
            waits.append(left)
        count, left = self._by_key.count(key_id)
        if count >= self.max_failures * FLEET_FACTOR:
            waits.append(left)
        return max(1, math.ceil(max(waits))) if waits else None

    def reserve(self, key_id: str, client: str | None = None) -> Reservation | int:
        """Count an attempt now, before it runs: its Reservation, or (when over a limit,
        nothing counted) the seconds to wait."""
        wait = self.retry_after(key_id, client)
        if wait is not None:
            return wait
        return Reservation(
            key_id, client, self._by_client.add((key_id, client)), self._by_key.add(key_id)
        )

    def refund(self, reservation: Reservation) -> None:
        """The attempt was the right secret: it does not count against the key."""
        self._by_client.remove((reservation.key_id, reservation.client), reservation.client_window)
        self._by_key.remove(reservation.key_id, reservation.key_window)
