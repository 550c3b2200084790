"""Rate-limit tests' view of responses: RateLimit-* headers read against the client's clock.

Every limit in these tests is per hour (PER). Windows are aligned to the clock, so the
expected RateLimit-Reset follows from the time a response arrived, and `in_one_window`
re-runs a scenario (with fresh keys) that happened to straddle a window boundary, instead
of sleeping until a window starts or flaking once an hour.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

PER = 3600  # every limit in these tests is per hour


@dataclass
class Seen:
    """One response as the client saw it, with the client's clock when it arrived."""

    status: int
    headers: CIMultiDictProxy[str]
    body: Any
    at: float

    @property
    def limit(self) -> str | None:
        return self.headers.get("RateLimit-Limit")

    @property
    def remaining(self) -> str | None:
        return self.headers.get("RateLimit-Remaining")

    def window_end(self) -> int | None:
        reset = self.headers.get("RateLimit-Reset")
        return None if reset is None else round((self.at + int(reset)) / PER) * PER

    def assert_reset_matches_the_clock(self) -> None:
        reset = int(self.headers["RateLimit-Reset"])
        expected = PER - self.at % PER  # the gateway rounds up, a moment earlier
        assert reset >= 1 and -1 < reset - expected < 2, (reset, expected)


async def get(http: aiohttp.ClientSession, url: str, secret: str) -> Seen:
    async with http.get(url, headers={"Authorization": f"Bearer {secret}"}) as reply:
        text = await reply.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return Seen(reply.status, reply.headers, body, time.time())


async def in_one_window(scenario: Callable[[], Awaitable[list[Seen]]]) -> list[Seen]:
    """Run `scenario` (which makes its own fresh keys); again if it crossed a window edge."""
    for _ in range(2):
        started = time.time()
        seen = await scenario()
        # The client's clock from before the first request to after the last also tells
        # a scenario of one response, or one whose last response crossed an edge in flight.
        within = started // PER == time.time() // PER
        if within and len({s.window_end() for s in seen} - {None}) <= 1:
            return seen
    raise AssertionError("two runs in a row crossed a window boundary")
