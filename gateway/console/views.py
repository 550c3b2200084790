"""Pure helpers the console's templates use: times in words, exact times, expiry presets.

No I/O: each is a small function of its arguments (and `now`), tested with tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

# What the create form offers; the value is what the admin API's `expires_in` accepts.
EXPIRY_PRESETS: tuple[tuple[str, str], ...] = (
    ("30d", "30 days"),
    ("90d", "90 days"),
    ("365d", "1 year"),
    ("never", "Never"),
    ("date", "On a date"),
)
# Roll: how long the old key keeps working next to the new one.
GRACE_PRESETS: tuple[tuple[str, str], ...] = (
    ("0s", "Stop it now"),
    ("1h", "1 hour"),
    ("24h", "24 hours"),
    ("7d", "7 days"),
)
RATE_WINDOWS: tuple[tuple[str, str], ...] = (
    ("1s", "per second"),
    ("1m", "per minute"),
    ("1h", "per hour"),
    ("1d", "per day"),
)
ACTIONS: tuple[tuple[str, str], ...] = (
    ("key.create", "Key created"),
    ("key.update", "Key changed"),
    ("key.roll", "Key rolled"),
    ("key.revoke", "Key revoked"),
    ("member.invite", "Member invited"),
    ("member.role", "Role changed"),
    ("member.remove", "Member removed"),
    ("user.disable", "Person disabled"),
    ("user.sessions_revoke", "Sessions ended"),
    ("user_token.revoke", "User tokens revoked"),
    ("org.create", "Organisation created"),
)
ACTION_LABELS = dict(ACTIONS)

_UNITS = (
    ("year", 365 * 86400),
    ("month", 30 * 86400),
    ("week", 7 * 86400),
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
)


def relative(value: datetime | None, now: datetime, *, none: str = "Never") -> str:
    """`value` in words from `now`: "just now", "5 minutes ago", "in 29 days"."""
    if value is None:
        return none
    seconds = (value - now).total_seconds()
    span = abs(seconds)
    if span < 45:
        return "just now"
    for unit, size in _UNITS:
        if span >= size:
            count = round(span / size) if unit != "minute" else max(1, round(span / size))
            break
    else:
        unit, count = "minute", 1
    words = f"{count} {unit}{'' if count == 1 else 's'}"
    return f"in {words}" if seconds > 0 else f"{words} ago"


def exact(value: datetime | None) -> str:
    """The exact time for a tooltip: "2025-03-04 12:30:05 UTC"."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    """The machine-readable time of a `<time datetime>` attribute."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def short_date(value: datetime | None, *, none: str = "Never") -> str:
    """A date in words for a table cell: "4 Mar 2025"."""
    if value is None:
        return none
    at = value.astimezone(UTC)
    return f"{at.day} {at.strftime('%b %Y')}"


def trace_id(traceparent: str | None) -> str:
    """The trace id of a W3C traceparent (`00-<trace id>-<span>-<flags>`), or ""."""
    if not traceparent:
        return ""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else ""


def person(principal: str | None) -> str:
    """Who a principal is, for people: `user:ann@x` -> ann@x, `key:kg_live_ab` stays."""
    if not principal:
        return ""
    return principal.removeprefix("user:")


def safe_next(value: str | None, default: str = "/console/") -> str:
    """Where to go after signing in: only a path of this console, never another site."""
    if not value or not value.startswith("/console/") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        return default
    if any(ord(c) < 32 for c in value):
        return default
    return value
