"""The rate-limit step of the pipeline: count the request, refuse it over a limit.

Counted in Redis so that every gateway shares one budget. When Redis fails, requests are
never refused or failed because of it: this process counts in memory instead (the limit
then holds per gateway process), the failure is counted in
keygate_store_errors_total{store="redis"}, one warning is logged per outage, and Redis is
asked again only after RETRY_INTERVAL, so an unreachable Redis does not add its timeout
to every limited request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.config import RouteConfig
from gateway.keys.rate_limits import RateLimit
from gateway.observability import metrics
from gateway.proxy.errors import RateLimited
from gateway.proxy.rate_windows import Window, seconds_to_reset, tightest, window_start
from gateway.store.rate_counts import Counter, CountsUnavailable, RedisRateCounts, counter_name

log = logging.getLogger("keygate.rate_limit")

RETRY_INTERVAL = 1.0  # seconds without asking Redis after it failed
PRUNE_INTERVAL = 1.0  # how often the in-memory counts drop ended windows


class LocalCounts:
    """Fixed-window counters of this process alone: the fallback while Redis is away.

    Counts as the Redis script does: a request over any limit is taken back from the
    others at once.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._ends: dict[str, float] = {}
        self._pruned = 0.0

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, counters: Sequence[Counter], now: float) -> list[int]:
        if now - self._pruned >= PRUNE_INTERVAL:
            self._prune(now)
        out = []
        for counter in counters:
            count = self._counts.get(counter.name, 0) + 1
            self._counts[counter.name] = count
            if count == 1:
                self._ends[counter.name] = counter.ends_at
            out.append(count)
        if any(n > c.limit for n, c in zip(out, counters, strict=True)):
            for n, c in zip(out, counters, strict=True):
                if n <= c.limit:
                    self._counts[c.name] -= 1
        return out

    def _prune(self, now: float) -> None:
        self._pruned = now
        for name in [n for n, end in self._ends.items() if end <= now]:
            del self._counts[name], self._ends[name]


class Counted(Protocol):
    """Whom a request is counted for: a key's state, or a user token's subject (its id
    names the subject, so every token of one person shares one budget)."""

    @property
    def id(self) -> str: ...

    @property
    def rate_limit(self) -> RateLimit | None: ...


class RateLimiter:
    """Counts requests against a route's and a key's limits; raises RateLimited."""

    def __init__(
        self, redis: RedisRateCounts | None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.local = LocalCounts()
        self._retry_at = 0.0  # monotonic time before which Redis is not asked
        self._outage = False

    async def admit(self, route: RouteConfig, key: Counted) -> tuple[tuple[str, str], ...]:
        """The RateLimit-* headers for an allowed request; raise RateLimited otherwise.

        Called only when the route or the key has a limit.
        """
        now = self.clock()
        limits: list[tuple[str | None, RateLimit]] = []
        if route.rate_limit is not None:
            limits.append((route.name, route.rate_limit))
        if key.rate_limit is not None:
            limits.append((None, key.rate_limit))
        counters = []
        for scope, limit in limits:
            start = window_start(now, limit.per)
            counters.append(
                Counter(
                    counter_name(scope, key.id, limit.per, start), limit.requests, start + limit.per
                )
            )
        counts = await self._count(counters, now)
        windows = [
            Window(limit, count, seconds_to_reset(now, limit.per))
            for (_, limit), count in zip(limits, counts, strict=True)
        ]
        refused = [w for w in windows if not w.allowed]
        if not refused:
            return tightest(windows).headers()
        # The limits that had room were already given this request back by the count; the
        # answer describes a limit that refused (a given-back one may show 0 left and a
        # far reset).
        raise RateLimited(tightest(refused))

    async def _count(self, counters: list[Counter], now: float) -> list[int]:
        """The counts with this request: shared ones from Redis, else this process's."""
        if self.redis is not None and time.monotonic() >= self._retry_at:
            if self._outage:
                # One probe at a time: requests arriving while it waits for its timeout
                # count locally instead of each waiting for a timeout of their own.
                self._retry_at = time.monotonic() + RETRY_INTERVAL
            try:
                counts = await self.redis.count(counters, now)
            except CountsUnavailable as exc:
                self._failed(exc)
            else:
                if self._outage:
                    self._outage = False
                    self._retry_at = 0.0
                    log.info("Redis reachable again: rate limits are shared by every gateway again")
                return counts
        return self.local.count(counters, now)

    def _failed(self, exc: CountsUnavailable) -> None:
        metrics.REDIS_ERRORS.inc()
        self._retry_at = time.monotonic() + RETRY_INTERVAL
        if not self._outage:
            self._outage = True
            log.warning(
                "Redis unreachable (%s): rate limits are counted by each gateway process "
                "until it is back",
                exc,
            )
