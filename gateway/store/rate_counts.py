"""Rate-limit counters in Redis, shared by every gateway: one key per counter and window.

  keygate:rl:{<key_id>}:key:<per>:<window_start>              a key's own limit (all routes)
  keygate:rl:{<key_id>}:route:<route name>:<per>:<window_start>  a route's limit, per key

`{<key_id>}` is a Redis Cluster hash tag: every counter of one request (they all belong
to one key) lives in the same slot, as a multi-key script requires there. The route name
is the only free-form part and sits between fixed-format parts, so no two counters can
share a name (not even a route named "key"). The window length is part of
the name: changing a limit from 100/1m to 100/1h starts a fresh count instead of
inheriting one whose window start happens to coincide.

All counters of a request are counted by one Lua script, in one round trip: it adds one
to each and, when any is then over its limit, takes the one back from those that had
room. A script runs atomically, so no other request ever sees a counter raised by a
request that is being refused (with a separate give-back it could, and be refused too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

_PREFIX = "keygate:rl:"
# Counters outlive their window by this much, so a gateway whose clock is a few seconds
# behind still finds (and increments) the counter of the window it believes current.
EXPIRY_MARGIN = 10

# KEYS: the request's counters; ARGV: each one's limit and milliseconds to live, in turn.
# Every call sets the expiry (no counter is ever left without one, even a given-back one).
_COUNT = """
local counts, over = {}, false
for i, name in ipairs(KEYS) do
  counts[i] = redis.call('INCR', name)
  if counts[i] > tonumber(ARGV[2 * i - 1]) then over = true end
end
for i, name in ipairs(KEYS) do
  if over and counts[i] <= tonumber(ARGV[2 * i - 1]) then redis.call('DECR', name) end
  redis.call('PEXPIRE', name, ARGV[2 * i])
end
return counts
"""


@dataclass(frozen=True, slots=True)
class Counter:
    """One limit's counter for the current window."""

    name: str  # the Redis key, from counter_name
    limit: int  # requests allowed in the window
    ends_at: int  # Unix seconds at which the window ends


class CountsUnavailable(Exception):
    """Redis did not answer: the caller counts somewhere else."""


def counter_name(route: str | None, key_id: str, per: int, window_start: int) -> str:
    """The Redis key of one counter; `route` None is the key's own limit."""
    if route is None:
        return f"{_PREFIX}{{{key_id}}}:key:{per}:{window_start}"
    return f"{_PREFIX}{{{key_id}}}:route:{route}:{per}:{window_start}"


def milliseconds_to_live(counter: Counter, now: float) -> int:
    """How long the counter is kept: until its window's end plus EXPIRY_MARGIN.

    The end is fixed, so the counter never outlives its window by more than the margin,
    however late in the window it was last counted. It is sent as a time to live
    computed from the gateway's clock, not as PEXPIREAT, because the window itself is
    the gateway's: a Redis host whose clock runs ahead would otherwise drop counters
    before their window ends (and every request would look like the window's first).
    """
    return max(1, round((counter.ends_at + EXPIRY_MARGIN - now) * 1000))


class RedisRateCounts:
    """Counts of shared counters, on the app's Redis client (same timeouts)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._count = client.register_script(_COUNT)

    async def count(self, counters: Sequence[Counter], now: float) -> list[int]:
        """Each counter's value with this request; raise CountsUnavailable.

        When any value is over its counter's limit, the request has already been taken
        back from the counters that had room (their value here still includes it).
        """
        args: list[int] = []
        for counter in counters:
            args += (counter.limit, milliseconds_to_live(counter, now))
        try:
            replies = await self._count(keys=[c.name for c in counters], args=args)
        except (TimeoutError, RedisError, OSError) as exc:
            raise CountsUnavailable(type(exc).__name__) from exc
        return [int(value) for value in replies]
