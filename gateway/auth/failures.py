"""Limits on argon2 verifications of wrong secrets, per key id and per client.

Before a key's right secret has been seen, every candidate secret costs an argon2 verify
(~20 ms of CPU). Failures are counted in a window per (key id, client address) and per
key id: one client flooding a key's public id is cut off after `max_failures`, without
shutting out the key's real user on another address; a flood spread over many addresses
is cut off for everyone after `max_failures * FLEET_FACTOR`, which bounds the CPU one key
id can cost. Once the right secret is seen, wrong ones are refused by the keyed hash
without argon2 at all, so a key in use is never affected.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

FLEET_FACTOR = 10


class _WindowCounter:
    def __init__(self, window: float, max_tracked: int, clock: Callable[[], float]) -> None:
        self.window = window
        self.max_tracked = max_tracked
        self.clock = clock
        self._counts: OrderedDict[object, tuple[float, int]] = OrderedDict()

    def count(self, key: object) -> int:
        found = self._counts.get(key)
        if found is None:
            return 0
        start, count = found
        if self.clock() - start >= self.window:
            del self._counts[key]
            return 0
        return count

    def add(self, key: object) -> None:
        now = self.clock()
        start, count = self._counts.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        self._counts[key] = (start, count + 1)
        self._counts.move_to_end(key)
        while len(self._counts) > self.max_tracked:
            self._counts.popitem(last=False)


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

    def blocked(self, key_id: str, client: str | None = None) -> bool:
        return (
            self._by_client.count((key_id, client)) >= self.max_failures
            or self._by_key.count(key_id) >= self.max_failures * FLEET_FACTOR
        )

    def record_failure(self, key_id: str, client: str | None = None) -> None:
        self._by_client.add((key_id, client))
        self._by_key.add(key_id)
