"""Rate-limit counters in Redis, shared by every gateway: one key per counter and window.

  keygate:rl:key:<key_id>:<per>:<window_start>             a key's own limit (all routes)
  keygate:rl:route:<route name>:<key_id>:<per>:<window_start>  a route's limit, per key

The route name is the only free-form part and sits between fixed-format parts, so no two
counters can share a name (not even a route named "key"). The window length is part of
the name: changing a limit from 100/1m to 100/1h starts a fresh count instead of
inheriting one whose window start happens to coincide.

Counting is INCR + EXPIRE for every counter of a request in one MULTI/EXEC round trip
(plain EXPIRE, not EXPIRE NX, which needs Redis 7): the expiry is renewed by each
increment, which only ever keeps a counter a little longer than its window.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

_PREFIX = "keygate:rl:"
# Counters outlive their window by this much, so a gateway whose clock is a few seconds
# behind still finds (and increments) the counter of the window it believes current.
EXPIRY_MARGIN = 10

Counter = tuple[str, int]  # (Redis key, window seconds)


class CountsUnavailable(Exception):
    """Redis did not answer: the caller counts somewhere else."""


def counter_name(route: str | None, key_id: str, per: int, window_start: int) -> str:
    """The Redis key of one counter; `route` None is the key's own limit."""
    if route is None:
        return f"{_PREFIX}key:{key_id}:{per}:{window_start}"
    return f"{_PREFIX}route:{route}:{key_id}:{per}:{window_start}"


class RedisRateCounts:
    """Increments of shared counters, on the app's Redis client (same timeouts)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def increment(self, counters: Sequence[Counter]) -> list[int]:
        """Each counter's value after adding one; raise CountsUnavailable."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for name, per in counters:
                    pipe.incr(name)
                    pipe.expire(name, per + EXPIRY_MARGIN)
                replies = await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            raise CountsUnavailable(type(exc).__name__) from exc
        return [int(value) for value in replies[::2]]

    async def decrement(self, counters: Sequence[Counter]) -> None:
        """Give back one count each (a request another limit refused); raise CountsUnavailable."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for name, per in counters:
                    pipe.decr(name)
                    pipe.expire(name, per + EXPIRY_MARGIN)  # never a counter without expiry
                await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            raise CountsUnavailable(type(exc).__name__) from exc
