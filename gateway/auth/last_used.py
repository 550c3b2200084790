"""Write-behind of `last_used_at`: coalesced per key in memory, flushed in one statement.

At most one write per key per flush interval whatever the request rate; a failed flush
keeps its stamps for the next one; memory is bounded (oldest stamps dropped, counted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from gateway.keys.errors import StoreUnavailable
from gateway.observability import metrics
from gateway.store import queries
from gateway.store.db import Database

log = logging.getLogger("keygate.last_used")


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
        """Write every pending stamp in one statement; on failure keep them. Returns rows."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        ids = list(batch)
        stamps = [datetime.fromtimestamp(batch[i], UTC) for i in ids]
        try:
            async with self.db.connection() as conn:
                written = await queries.stamp_last_used(conn, ids, stamps)
        except (TimeoutError, StoreUnavailable, OSError):
            metrics.POSTGRES_ERRORS.inc()
            for key_id, at in batch.items():  # newer stamps recorded meanwhile win
                if key_id not in self._pending:
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
