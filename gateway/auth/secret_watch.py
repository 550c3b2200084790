"""Tell operators when this instance's KEYGATE_SECRET differs from the fleet's.

Nothing else would: an instance with another secret never finds the verifiers the others
cached in Redis, so it quietly runs argon2 for every key it has not verified itself (and
counts wrong-secret attempts where the others do not). The check (gateway/store/
secret_check.py) runs when the worker starts, every INTERVAL after, and RETRY after a
failed attempt, so a Redis that comes back is checked within seconds. A mismatch is
logged once per process, as an ERROR naming what to fix (never the secret), and shown by
`keygate_secret_mismatch` as long as it lasts.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from gateway.observability import metrics
from gateway.store.secret_check import CHECK_KEY, SecretCheck

log = logging.getLogger("keygate.secret")

INTERVAL = 30.0
RETRY = 5.0
EXPIRY = 3 * INTERVAL  # a value no instance refreshes (an old secret) is gone after this

MISMATCH = (
    "KEYGATE_SECRET differs from the secret of another gateway sharing this Redis (check "
    "value in Redis key %s): verifiers cached by the others are never used here, so every "
    "key costs an argon2 verify. Give every instance the same KEYGATE_SECRET and restart "
    "the ones that differ."
)


async def watch_secret(check: SecretCheck) -> None:
    """Compare this instance's secret with the fleet's until cancelled."""
    reported = False
    while True:
        try:
            agrees = await check.agrees()
        except (TimeoutError, RedisError, OSError):
            await asyncio.sleep(RETRY)  # Redis away: check again soon after it is back
            continue
        metrics.secret_mismatch.set(0 if agrees else 1)
        if not agrees and not reported:
            log.error(MISMATCH, CHECK_KEY)
            reported = True
        await asyncio.sleep(INTERVAL)
