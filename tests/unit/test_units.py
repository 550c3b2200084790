"""Tests for gateway.units: durations and sizes as people write them."""

from __future__ import annotations

import pytest

from gateway.units import format_duration, parse_duration, parse_size

DURATIONS = [
    ("500ms", 0.5),
    ("1ms", 0.001),
    ("0s", 0.0),
    ("5s", 5.0),
    ("1.5s", 1.5),
    ("10m", 600.0),
    ("24h", 86400.0),
    ("30d", 30 * 86400.0),
    ("1h30m", 5400.0),
    ("1d12h", 129600.0),
    ("2m500ms", 120.5),
]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5",
        "s",
        "5 s",
        "-5s",
        "+5s",
        "5sec",
        "5S",
        "5y",
        "five seconds",
        "1h 30m",
        "5s,",
        ".5s",
        "1e3s",
        "0x10s",
        None,
        5,
        5.0,
    ],
    ids=repr,
)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="is not a duration") as info:
        parse_duration(text)  # type: ignore[arg-type]
    # The message tells what a duration looks like.
    assert "24h" in str(info.value)


SIZES = [
    (0, 0),
    (1234, 1234),
    ("1234", 1234),
    ("10B", 10),
    ("64KiB", 64 * 1024),
    ("10MiB", 10 * 1024**2),
    ("1GiB", 1024**3),
    ("1KB", 1000),
    ("2MB", 2_000_000),
    ("3GB", 3_000_000_000),
    ("64 KiB", 64 * 1024),
]


@pytest.mark.parametrize(("value", "size"), SIZES)
def test_parse_size(value: int | str, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value",
    [-1, "-1", "", "KiB", "1.5MiB", "10 mib", "10kib", "10TiB", "ten", True, False, 1.5, None, [1]],
    ids=repr,
)
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "500ms"), (5, "5s"), (90, "90s"), (600, "10m"), (86400, "1d"), (7200, "2h")],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
