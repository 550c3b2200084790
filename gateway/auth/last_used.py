"""Write-behind of `last_used_at`: coalesced per key in memory, flushed once per interval
in bounded statements (STAMP_CHUNK keys each, in id order).

At most one write per key per flush interval whatever the request rate; a failed flush
keeps the stamps it had not written for the next one; memory is bounded (oldest stamps
dropped, counted).
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.keys.errors import StoreUnavailable
from gateway.observability import metrics
from gateway.store import queries
from gateway.store.db import Database

log = logging.getLogger("keygate.last_used")
# Stamps per statement: a flush of 100,000 keys holds row locks on at most this many at
# once, and a failure leaves the rest pending rather than rolling everything back.
STAMP_CHUNK = 5000


class LastUsedRecorder:
    def __init__(self, db: Database, interval: float, max_pending: int) -> None:
        self.db = db
        self.interval = interval
        self.max_pending = max_pending
        self.dropped = 0
        self._pending: dict[str, float] = {}

    def record(self, key_id: str) -> None:
        """Called on every allowed request: O(1), no I/O."""
        pending = self._pending
        # Plain assignment: the dict stays ordered by first use in this interval, which is
        # what the drop policy needs. (Re-inserting to order by latest use made the dict
        # rebuild its table every few requests.)
        pending[key_id] = time.time()
        if len(pending) > self.max_pending:
            del pending[next(iter(pending))]
            self.dropped += 1

    def __len__(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write every pending stamp, in id order, STAMP_CHUNK per statement (each its own
        short transaction); on failure keep the stamps not yet written. Returns rows."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        # Sorted, so each chunk is one id range; within a statement PostgreSQL takes the
        # row locks in id order itself (stamp_last_used), whatever the order given.
        ids = sorted(batch)
        written = 0
        done = 0
        try:
            async with self.db.connection() as conn:
                for done in range(0, len(ids), STAMP_CHUNK):
                    chunk = ids[done : done + STAMP_CHUNK]
                    stamps = [batch[i] for i in chunk]
                    written += await queries.stamp_last_used(conn, chunk, stamps)
        except (TimeoutError, StoreUnavailable, OSError):
            metrics.POSTGRES_ERRORS.inc()
            unwritten = set(ids[done:])  # the chunks before were committed
            for key_id, at in batch.items():  # in first-use order, for the drop policy
                if key_id in unwritten and key_id not in self._pending:  # newer stamps win
                    self._pending[key_id] = at
            while len(self._pending) > self.max_pending:
                del self._pending[next(iter(self._pending))]
                self.dropped += 1
            raise
        finally:
            metrics.last_used_pending.set(len(self._pending))
        metrics.last_used_flushes.inc()
        return written

    async def run(self) -> None:
        """Flush every interval until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except (TimeoutError, StoreUnavailable, OSError) as exc:
                log.warning("last_used flush failed, will retry: %s", exc)
