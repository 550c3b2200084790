"""Fixed-window arithmetic and RateLimit-* header values, as tables."""

from __future__ import annotations

import pytest

from gateway.keys.rate_limits import RateLimit
from gateway.proxy.errors import RateLimited
from gateway.proxy.rate_windows import (
    Window,
    refusal_message,
    seconds_to_reset,
    tightest,
    window_start,
)


@pytest.mark.parametrize(
    ("now", "per", "start", "reset"),
    [
        (0.0, 60, 0, 60),  # at the very start the whole window remains
        (59.999, 60, 0, 1),  # rounded up, never 0
        (60.0, 60, 60, 60),
        (120.3, 60, 120, 60),  # 59.7 s left: rounded up
        (1_700_000_017.5, 60, 1_699_999_980, 23),
        (1_700_000_017.0, 3600, 1_699_999_200, 2783),
        (5.5, 1, 5, 1),
        (86399.0, 86400, 0, 1),
    ],
)
def test_window_start_and_reset(now: float, per: int, start: int, reset: int) -> None:
    assert window_start(now, per) == start
    assert seconds_to_reset(now, per) == reset
    assert start <= now < start + per


@pytest.mark.parametrize(
    ("requests", "count", "allowed", "remaining"),
    [
        (3, 1, True, 2),
        (3, 2, True, 1),
        (3, 3, True, 0),  # the last allowed request leaves nothing
        (3, 4, False, 0),
        (3, 40, False, 0),  # refused requests do not make remaining negative
        (1, 1, True, 0),
    ],
)
def test_allowed_and_remaining(requests: int, count: int, allowed: bool, remaining: int) -> None:
    w = Window(RateLimit(requests, 60), count, 17)
    assert (w.allowed, w.remaining) == (allowed, remaining)
    assert w.headers() == (
        ("RateLimit-Limit", str(requests)),
        ("RateLimit-Remaining", str(remaining)),
        ("RateLimit-Reset", "17"),
    )


ROUTE = RateLimit(10, 60)
KEY = RateLimit(1000, 3600)


@pytest.mark.parametrize(
    ("windows", "shown"),
    [
        ([Window(ROUTE, 3, 40)], 0),
        ([Window(ROUTE, 3, 40), Window(KEY, 5, 3000)], 0),  # 7 left < 995 left
        ([Window(ROUTE, 3, 40), Window(KEY, 998, 3000)], 1),  # 2 left < 7 left
        # Both exhausted: the later reset, so Retry-After frees both.
        ([Window(ROUTE, 11, 40), Window(KEY, 1000, 3000)], 1),
        ([Window(KEY, 1000, 3000), Window(ROUTE, 11, 40)], 0),
        ([Window(ROUTE, 11, 40), Window(RateLimit(5, 10), 6, 5)], 0),
    ],
)
def test_tightest_window_is_described(windows: list[Window], shown: int) -> None:
    assert tightest(windows) is windows[shown]


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (
            Window(RateLimit(100, 60), 101, 17),
            "Rate limit exceeded: 100 requests per 60 seconds; retry after 17 seconds.",
        ),
        (
            Window(RateLimit(1, 1), 2, 1),
            "Rate limit exceeded: 1 request per 1 second; retry after 1 second.",
        ),
    ],
)
def test_refusal_message(window: Window, message: str) -> None:
    assert refusal_message(window) == message


def test_refusal_carries_status_code_and_every_header() -> None:
    refusal = RateLimited(Window(RateLimit(3, 60), 4, 17))
    assert (refusal.status, refusal.code) == (429, "rate_limited")
    assert refusal.message.startswith("Rate limit exceeded: 3 requests per 60 seconds")
    assert refusal.headers() == {
        "Retry-After": "17",
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "17",
    }
