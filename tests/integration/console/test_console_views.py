"""The console's pure helpers, by table: times in words, and where sign-in may lead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.console.views import exact, iso, person, relative, safe_next, trace_id

NOW = datetime(2025, 3, 4, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (timedelta(seconds=-10), "just now"),
        (timedelta(seconds=30), "just now"),
        (timedelta(minutes=-1), "1 minute ago"),
        (timedelta(minutes=-5), "5 minutes ago"),
        (timedelta(hours=-3), "3 hours ago"),
        (timedelta(days=-1), "1 day ago"),
        (timedelta(days=29), "in 4 weeks"),
        (timedelta(days=90), "in 3 months"),
        (timedelta(days=365), "in 1 year"),
    ],
)
def test_relative_times(delta: timedelta, words: str) -> None:
    assert relative(NOW + delta, NOW) == words


def test_exact_times_and_empties() -> None:
    assert relative(None, NOW) == "Never"
    assert exact(NOW) == "2025-03-04 12:00:00 UTC"
    assert iso(NOW) == "2025-03-04T12:00:00Z"
    assert exact(None) == iso(None) == ""


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/console/orgs/acme/keys?status=revoked", True),
        ("/console/", True),
        ("https://evil.example/console/", False),
        ("//evil.example/console/", False),
        ("/console/\\evil", False),
        ("/admin/v1/orgs", False),
        ("/console/\nSet-Cookie: x", False),
        (None, False),
    ],
)
def test_sign_in_only_leads_back_into_the_console(target: str | None, kept: bool) -> None:
    assert safe_next(target) == (target if kept else "/console/")


def test_audit_cells() -> None:
    assert trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert trace_id(None) == trace_id("junk") == ""
    assert person("user:ann@example.com") == "ann@example.com"
    assert person("key:kg_live_ab") == "key:kg_live_ab"
