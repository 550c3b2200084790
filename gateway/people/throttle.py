"""How many sign-in attempts are allowed: per typed email and per client address.

Counted in PostgreSQL (gateway/store/people_queries.py), which every gateway process
shares, in fixed windows. An attempt is counted *before* its password is checked, so
parallel guesses cannot slip past the limit, and a refused attempt costs no argon2 work.
A successful sign-in clears its email's count and takes its own attempt back from the
address (an office behind one NAT signs in all day without locking itself out).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ThrottlePolicy:
    per_email: int = 5  # attempts on one email per window, whoever makes them
    per_ip: int = 30  # attempts from one client address per window, on any emails
    window: float = 900.0  # seconds


@dataclass(frozen=True)
class Count:
    """One bucket's count in its current window."""

    attempts: int
    window_start: datetime

    def retry_after(self, now: datetime, window: float) -> int:
        """Whole seconds until the window ends (at least 1)."""
        left = self.window_start + timedelta(seconds=window) - now
        return max(1, int(left.total_seconds() + 0.999))
