"""Per key id limit on argon2 verifications of wrong secrets.

Before a key's right secret has been seen, every candidate secret costs an argon2 verify
(~20 ms of CPU). Counting failures per key id in a window and refusing further candidates
once the limit is hit keeps a flood against one id from eating the verify pool. Once the
right secret is seen, wrong ones are refused by the keyed hash without argon2 at all.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class FailureLimiter:
    def __init__(
        self,
        window: float,
        max_failures: int,
        max_tracked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_failures = max_failures
        self.max_tracked = max_tracked
        self.clock = clock
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def blocked(self, key_id: str) -> bool:
        found = self._counts.get(key_id)
        if found is None:
            return False
        start, count = found
        if self.clock() - start >= self.window:
            del self._counts[key_id]
            return False
        return count >= self.max_failures

    def record_failure(self, key_id: str) -> None:
        now = self.clock()
        start, count = self._counts.get(key_id, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        self._counts[key_id] = (start, count + 1)
        self._counts.move_to_end(key_id)
        while len(self._counts) > self.max_tracked:
            self._counts.popitem(last=False)
