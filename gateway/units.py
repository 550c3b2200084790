"""Parsing of human-written durations (`500ms`, `5s`, `24h`, `30d`) and sizes (`64KiB`)."""

from __future__ import annotations

import re

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
_SIZE = re.compile(r"(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?")


def parse_duration(text: str) -> float:
    """Return the number of seconds in `text`, e.g. "1h30m" -> 5400.0.

    Raises ValueError with a message suitable for users on anything else.
    """
    if not isinstance(text, str) or not _DURATION_WHOLE.fullmatch(text.strip()):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit: ms, s, m, h or d "
            "(for example 500ms, 5s, 24h, 30d)"
        )
    return sum(
        float(amount) * _DURATION_UNITS[unit]
        for amount, unit in _DURATION_PART.findall(text.strip())
    )


def parse_size(value: int | str) -> int:
    """Return a byte count from an int or a string like "64KiB" or "10MiB"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is not a size; sizes cannot be negative")
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            f"{value!r} is not a size; write bytes or a number with KiB, MiB, GiB, KB, MB or GB"
        )
    return int(match.group(1)) * _SIZE_UNITS[match.group(2) or ""]


def format_duration(seconds: float) -> str:
    """Render seconds back in the largest whole unit (used in messages)."""
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"
