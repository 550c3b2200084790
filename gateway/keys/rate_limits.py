"""A rate limit as a value: `N requests per window`, and its written forms.

Routes (config) and keys (Postgres, the admin API, the CLI) all carry one; they are read
here, in one way, so every surface accepts and refuses the same things:

  mapping  {requests: 100, per: 1m}      (YAML config, admin API JSON)
  text     100/1m                        (CLI --rate-limit)

Windows are whole seconds from 1s to MAX_WINDOW: counters are fixed windows aligned to
the epoch, so a fraction of a second would have no window to count in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.units import format_duration, parse_duration

MAX_REQUESTS = 1_000_000_000  # fits Postgres `integer`; beyond it a limit means nothing
MAX_WINDOW = 365 * 86400
FIELDS = ("requests", "per")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `requests` requests per fixed window of `per` seconds."""

    requests: int
    per: int

    def to_json(self) -> dict[str, Any]:
        """The form of the `key` object and of the config: {"requests": 100, "per": "1m"}."""
        return {"requests": self.requests, "per": format_duration(self.per)}

    def __str__(self) -> str:
        return f"{self.requests}/{format_duration(self.per)}"


class RateLimitError(ValueError):
    """Why a written rate limit is refused; `field` is "requests", "per" or None (the whole)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def check_requests(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RateLimitError(
            f"{value!r} is not a request count: use a whole number of at least 1", "requests"
        )
    if value > MAX_REQUESTS:
        raise RateLimitError(f"must be at most {MAX_REQUESTS}", "requests")
    return value


def check_window(value: object) -> int:
    """Whole seconds from a duration string (`1s`, `1m`, `1h`); refuse < 1s and fractions."""
    if not isinstance(value, str):
        raise RateLimitError(
            f"{value!r} is not a duration; write it as a string such as 1s, 1m or 1h", "per"
        )
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise RateLimitError(str(exc), "per") from None
    if seconds < 1:
        raise RateLimitError(f"{value!r} is shorter than the smallest window, 1s", "per")
    # Before int(): a duration of 309+ digits parses to inf, which int() cannot convert.
    if seconds > MAX_WINDOW:
        raise RateLimitError(f"{value!r} is longer than the largest window, 365d", "per")
    if seconds != int(seconds):
        raise RateLimitError(f"{value!r} is not a whole number of seconds", "per")
    return int(seconds)


def from_mapping(value: object) -> RateLimit:
    """{requests: N, per: <duration>}; both fields required, no others."""
    if not isinstance(value, Mapping):
        raise RateLimitError("must be a mapping such as {requests: 100, per: 1m}")
    unknown = sorted(str(k) for k in value if k not in FIELDS)
    if unknown:
        raise RateLimitError(
            f"unknown field {unknown[0]!r} (known fields: requests, per)", unknown[0]
        )
    for name in FIELDS:
        if name not in value:
            raise RateLimitError("is required", name)
    return RateLimit(check_requests(value["requests"]), check_window(value["per"]))


def from_text(text: str) -> RateLimit:
    """`N/<duration>`, e.g. `100/1m`, as the CLI takes it."""
    requests, slash, per = text.strip().partition("/")
    count = requests.strip()
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not slash or not (count.isascii() and count.isdigit()):
        raise RateLimitError(f"{text!r} is not a rate limit; write REQUESTS/WINDOW, e.g. 100/1m")
    # Thousands of digits would hit int()'s digit limit; anything that long is too many.
    number = int(count) if len(count) <= 18 else MAX_REQUESTS + 1
    return RateLimit(check_requests(number), check_window(per.strip()))


def no_looser(limit: RateLimit, ceiling: RateLimit) -> bool:
    """Whether `limit` never lets more through than `ceiling`, by both of its measures.

    Burst: at most as many requests in one window (`requests <= ceiling.requests`).
    Rate: at most as many requests per second on average
    (`requests / per <= ceiling.requests / ceiling.per`, compared as whole numbers).
    Both are needed: 1000/1h is slower than 100/1m on average but lets ten times as many
    through at once; 10/1s bursts less than 100/1m but sustains six times its rate.
    """
    return (
        limit.requests <= ceiling.requests
        and limit.requests * ceiling.per <= ceiling.requests * limit.per
    )
