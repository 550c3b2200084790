"""Fixed-window arithmetic and the RateLimit-* header values. Pure: no clock, no I/O.

Windows are aligned to the Unix epoch (window start = now - now mod per), as in Kong's
rate-limiting plugin: every gateway computes the same window from its own clock, so they
share one counter in Redis without coordinating.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.keys.rate_limits import RateLimit

LIMIT = "RateLimit-Limit"
REMAINING = "RateLimit-Remaining"
RESET = "RateLimit-Reset"
HEADER_NAMES = (LIMIT, REMAINING, RESET)


def window_start(now: float, per: int) -> int:
    """Start (Unix seconds) of the window of `per` seconds that contains `now`."""
    return int(now // per) * per


def seconds_to_reset(now: float, per: int) -> int:
    """Whole seconds until the window containing `now` ends, rounded up, at least 1.

    Rounded up so that a client waiting this long is never still inside the window.
    """
    return max(1, math.ceil(window_start(now, per) + per - now))


@dataclass(frozen=True, slots=True)
class Window:
    """One limit's counter after counting this request."""

    limit: RateLimit
    count: int  # requests counted in this window, this one included
    reset: int  # seconds until the window ends

    @property
    def allowed(self) -> bool:
        return self.count <= self.limit.requests

    @property
    def remaining(self) -> int:
        return max(0, self.limit.requests - self.count)

    def headers(self) -> tuple[tuple[str, str], ...]:
        """RateLimit-Limit / -Remaining / -Reset, as sent on every limited response."""
        return (
            (LIMIT, str(self.limit.requests)),
            (REMAINING, str(self.remaining)),
            (RESET, str(self.reset)),
        )


def tightest(windows: Sequence[Window]) -> Window:
    """The window the headers describe: fewest remaining; on a tie the later reset, so
    that Retry-After is a time at which every exhausted limit has room again."""
    return min(windows, key=lambda w: (w.remaining, -w.reset))


def refusal_message(window: Window) -> str:
    n, per = window.limit.requests, window.limit.per
    return (
        f"Rate limit exceeded: {n} {_plural(n, 'request')} per {per} {_plural(per, 'second')}; "
        f"retry after {window.reset} {_plural(window.reset, 'second')}."
    )


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"
