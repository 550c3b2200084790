"""The written forms of a rate limit (config mapping, admin JSON, CLI text), as tables."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.admin.openapi import openapi_document
from gateway.keys.rate_limits import (
    RateLimit,
    RateLimitError,
    check_window,
    from_mapping,
    from_text,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/1m", RateLimit(100, 60)),
        ("1/1s", RateLimit(1, 1)),
        (" 5 / 1h ", RateLimit(5, 3600)),
        ("10/1h30m", RateLimit(10, 5400)),
        ("3/2000ms", RateLimit(3, 2)),
        ("1000000000/365d", RateLimit(1_000_000_000, 365 * 86400)),
    ],
)
def test_text_form(text: str, expected: RateLimit) -> None:
    assert from_text(text) == expected


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ("100/xyz", "per", "'xyz' is not a duration"),
        ("0/1m", "requests", "0 is not a request count"),
        ("100/500ms", "per", "shorter than the smallest window, 1s"),
        ("100/1.5s", "per", "not a whole number of seconds"),
        ("100/366d", "per", "longer than the largest window"),
        ("1000000001/1m", "requests", "at most 1000000000"),
        ("100", None, "write REQUESTS/WINDOW"),
        ("-1/1m", None, "write REQUESTS/WINDOW"),
        ("ten/1m", None, "write REQUESTS/WINDOW"),
        ("/1m", None, "write REQUESTS/WINDOW"),
        ("100/", "per", "is not a duration"),
        ("\u00b2/1m", None, "write REQUESTS/WINDOW"),  # isdigit(), but not for int()
        ("1" * 5000 + "/1m", "requests", "at most 1000000000"),  # beyond int()'s digit limit
        ("5/1" + "0" * 400 + "s", "per", "longer than the largest window"),  # parses to inf
    ],
)
def test_text_form_errors_name_the_part(text: str, field: str | None, says: str) -> None:
    with pytest.raises(RateLimitError) as info:
        from_text(text)
    assert info.value.field == field
    assert says in info.value.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"requests": 100, "per": "1m"}, RateLimit(100, 60)),
        ({"per": "1d", "requests": 1}, RateLimit(1, 86400)),
    ],
)
def test_mapping_form(value: dict[str, Any], expected: RateLimit) -> None:
    assert from_mapping(value) == expected


@pytest.mark.parametrize(
    ("value", "field", "says"),
    [
        ({"requests": 0, "per": "1m"}, "requests", "0 is not a request count"),
        ({"requests": True, "per": "1m"}, "requests", "not a request count"),
        ({"requests": "100", "per": "1m"}, "requests", "not a request count"),
        ({"requests": 1.5, "per": "1m"}, "requests", "not a request count"),
        ({"requests": 10, "per": 60}, "per", "write it as a string"),
        ({"requests": 10, "per": "0s"}, "per", "shorter than the smallest window"),
        ({"requests": 10, "per": "1" + "0" * 400 + "s"}, "per", "longer than the largest"),
        ({"requests": 10}, "per", "is required"),
        ({"per": "1m"}, "requests", "is required"),
        ({"requests": 10, "per": "1m", "burst": 5}, "burst", "unknown field 'burst'"),
        ("100/1m", None, "must be a mapping"),
        ([100, "1m"], None, "must be a mapping"),
    ],
)
def test_mapping_form_errors_name_the_field(value: Any, field: str | None, says: str) -> None:
    with pytest.raises(RateLimitError) as info:
        from_mapping(value)
    assert info.value.field == field
    assert says in info.value.message


@pytest.mark.parametrize(
    ("limit", "json", "text"),
    [
        (RateLimit(100, 60), {"requests": 100, "per": "1m"}, "100/1m"),
        (RateLimit(1, 1), {"requests": 1, "per": "1s"}, "1/1s"),
        (RateLimit(7, 90), {"requests": 7, "per": "90s"}, "7/90s"),
        (RateLimit(2, 86400), {"requests": 2, "per": "1d"}, "2/1d"),
    ],
)
def test_round_trips(limit: RateLimit, json: dict[str, Any], text: str) -> None:
    assert limit.to_json() == json and str(limit) == text
    assert from_mapping(json) == limit and from_text(text) == limit


def _window_pattern() -> re.Pattern[str]:
    schema = openapi_document()["components"]["schemas"]["Key"]["properties"]["rate_limit"]
    return re.compile(schema["properties"]["per"]["pattern"])


@pytest.mark.parametrize(
    ("per", "accepted"),
    [
        ("1s", True),
        ("1m", True),
        ("90s", True),
        ("1h30m", True),
        ("365d", True),
        ("500ms", False),
        ("1.5s", False),
        ("1m30.5s", False),
        ("1", False),
        ("m", False),
        ("1ms", False),
        ("1w", False),
    ],
)
def test_the_admin_api_document_describes_the_windows_accepted(per: str, accepted: bool) -> None:
    """What the OpenAPI pattern allows, the service accepts (the range aside); the
    sub-second and fractional windows it refuses are ones the service refuses."""
    assert bool(_window_pattern().fullmatch(per)) == accepted
    if accepted:
        check_window(per)
    else:
        with pytest.raises(RateLimitError):
            check_window(per)
