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

from gateway.config import RouteConfig
from gateway.keys.rate_limits import RateLimit
from gateway.observability import metrics
from gateway.proxy.errors import RateLimited
from gateway.proxy.rate_windows import Window, seconds_to_reset, tightest, window_start
from gateway.store.key_cache import KeyState
from gateway.store.rate_counts import Counter, CountsUnavailable, RedisRateCounts, counter_name

log = logging.getLogger("keygate.rate_limit")

RETRY_INTERVAL = 1.0  # seconds without asking Redis after it failed
PRUNE_INTERVAL = 1.0  # how often the in-memory counts drop ended windows


class LocalCounts:
    """Fixed-window counters of this process alone: the fallback while Redis is away."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._ends: dict[str, float] = {}
        self._pruned = 0.0

    def __len__(self) -> int:
        return len(self._counts)

    def increment(self, counters: Sequence[Counter], now: float) -> list[int]:
        if now - self._pruned >= PRUNE_INTERVAL:
            self._prune(now)
        out = []
        for name, per in counters:
            count = self._counts.get(name, 0) + 1
            self._counts[name] = count
            if count == 1:
                self._ends[name] = window_start(now, per) + per
            out.append(count)
        return out

    def decrement(self, counters: Sequence[Counter]) -> None:
        for name, _ in counters:
            if name in self._counts:
                self._counts[name] -= 1

    def _prune(self, now: float) -> None:
        self._pruned = now
        for name in [n for n, end in self._ends.items() if end <= now]:
            del self._counts[name], self._ends[name]


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

    async def admit(self, route: RouteConfig, key: KeyState) -> tuple[tuple[str, str], ...]:
        """The RateLimit-* headers for an allowed request; raise RateLimited otherwise.

        Called only when the route or the key has a limit.
        """
        now = self.clock()
        limits: list[tuple[str | None, RateLimit]] = []
        if route.rate_limit is not None:
            limits.append((route.name, route.rate_limit))
        if key.rate_limit is not None:
            limits.append((None, key.rate_limit))
        counters = [
            (counter_name(scope, key.id, limit.per, window_start(now, limit.per)), limit.per)
            for scope, limit in limits
        ]
        counts, shared = await self._increment(counters, now)
        windows = [
            Window(limit, count, seconds_to_reset(now, limit.per))
            for (_, limit), count in zip(limits, counts, strict=True)
        ]
        refused = [w for w in windows if not w.allowed]
        if not refused:
            return tightest(windows).headers()
        # Refused: limits that had room for this request do not pay for it, and the answer
        # describes a limit that refused (a refunded one may show 0 left and a far reset).
        room = [c for c, w in zip(counters, windows, strict=True) if w.allowed]
        if room:
            await self._give_back(room, shared)
        raise RateLimited(tightest(refused))

    async def _increment(self, counters: list[Counter], now: float) -> tuple[list[int], bool]:
        """The counts after this request, and whether they are the shared (Redis) ones."""
        if self.redis is not None and time.monotonic() >= self._retry_at:
            if self._outage:
                # One probe at a time: requests arriving while it waits for its timeout
                # count locally instead of each waiting for a timeout of their own.
                self._retry_at = time.monotonic() + RETRY_INTERVAL
            try:
                counts = await self.redis.increment(counters)
            except CountsUnavailable as exc:
                self._failed(exc)
            else:
                if self._outage:
                    self._outage = False
                    self._retry_at = 0.0
                    log.warning("Redis reachable again: rate limits are shared by every "
                                "gateway again")
                return counts, True
        return self.local.increment(counters, now), False

    async def _give_back(self, counters: list[Counter], shared: bool) -> None:
        if shared and self.redis is not None:
            try:
                await self.redis.decrement(counters)
            except CountsUnavailable as exc:
                self._failed(exc)
            return
        self.local.decrement(counters)

    def _failed(self, exc: CountsUnavailable) -> None:
        metrics.REDIS_ERRORS.inc()
        self._retry_at = time.monotonic() + RETRY_INTERVAL
        if not self._outage:
            self._outage = True
            log.warning(
                "Redis unreachable (%s): rate limits are counted by each gateway process "
                "until it is back", exc
            )
