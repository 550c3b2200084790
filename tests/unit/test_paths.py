"""Tests for gateway.proxy.paths: a table of tricky paths plus properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.proxy.paths import InvalidPath, _normalise_full, normalise_path

REJECT = None

# (raw path, expected normalised path or REJECT)
CASES: list[tuple[str, str | None]] = [
    # Ordinary paths go through unchanged.
    ("/", "/"),
    ("/a/b", "/a/b"),
    ("/v1/users/42.json", "/v1/users/42.json"),
    ("/a/b/", "/a/b/"),
    ("/a..b/c", "/a..b/c"),
    ("/...", "/..."),
    ("/a/.hidden", "/a/.hidden"),
    # Not absolute.
    ("", REJECT),
    ("a/b", REJECT),
    ("*", REJECT),
    # Double slashes are merged, the trailing slash survives.
    ("//a///b", "/a/b"),
    ("//", "/"),
    ("/a//", "/a/"),
    # Dot segments (RFC 3986 §5.2.4).
    ("/a/./b", "/a/b"),
    ("/a/b/../c", "/a/c"),
    ("/a/b/.", "/a/b/"),
    ("/a/b/..", "/a/"),
    ("/a/b/./", "/a/b/"),
    ("/a/..", "/"),
    ("/.", "/"),
    ("/./", "/"),
    ("/a/%2e%2e/b", "/b"),
    ("/a/%2E%2e/b", "/b"),
    ("/a/.%2E/b", "/b"),
    ("/a/%2e/b", "/a/b"),
    ("/a//../b", "/b"),
    # Climbing above the root is refused, not clamped.
    ("/..", REJECT),
    ("/../a", REJECT),
    ("/a/../../b", REJECT),
    ("/%2e%2e/etc/passwd", REJECT),
    ("/a/./../..", REJECT),
    # Dot segments carrying parameters (servlet containers resolve them).
    ("/..;/admin", REJECT),
    ("/a/..;x/admin", REJECT),
    ("/.;x/", REJECT),
    ("/a/%2e%2e;/b", REJECT),
    ("/a/..%3b/b", REJECT),
    # Other parameters are data for the upstream.
    ("/a;v=1/b", "/a;v=1/b"),
    ("/a/b;jsessionid=x", "/a/b;jsessionid=x"),
    ("/a/...;x", "/a/...;x"),
    # Encoded slash and backslash.
    ("/a%2Fb", REJECT),
    ("/a%2fb", REJECT),
    ("/a%5Cb", REJECT),
    ("/a%5cb", REJECT),
    ("/a\\b", REJECT),
    ("/..\\..\\etc", REJECT),
    # NUL and control characters, raw or encoded.
    ("/a%00b", REJECT),
    ("/a\x00b", REJECT),
    ("/a\x01b", REJECT),
    ("/a\tb", REJECT),
    ("/a%0Ab", REJECT),
    ("/a%0d%0aSet-Cookie:x", REJECT),
    ("/a%7F", REJECT),
    ("/a\x7f", REJECT),
    # Invalid escapes.
    ("/a%", REJECT),
    ("/a%4", REJECT),
    ("/a%zz", REJECT),
    ("/a%4g", REJECT),
    ("/a% f", REJECT),
    ("/a%+f", REJECT),
    # Invalid UTF-8: over-long forms, lone continuation bytes, truncated sequences.
    ("/%C0%AE%C0%AE/x", REJECT),
    ("/a/%C0%AF", REJECT),
    ("/a/%E0%80%AE", REJECT),
    ("/a%80", REJECT),
    ("/a%C3", REJECT),
    ("/a%C3b", REJECT),
    ("/%ED%A0%80", REJECT),  # UTF-8-encoded surrogate
    ("/a\udc80", REJECT),  # raw byte smuggled in by surrogateescape
    # Non-ASCII, raw and encoded, ends up as upper-case UTF-8 escapes.
    ("/café", "/caf%C3%A9"),
    ("/caf%C3%A9", "/caf%C3%A9"),
    ("/caf%c3%a9", "/caf%C3%A9"),
    ("/日本", "/%E6%97%A5%E6%9C%AC"),
    ("/\u0085", "/%C2%85"),
    # Unreserved escapes are decoded.
    ("/%7E", "/~"),
    ("/%7euser", "/~user"),
    ("/%41%62%2D%5f", "/Ab-_"),
    ("/a%2Eb", "/a.b"),
    # Reserved escapes stay encoded, upper-cased; raw reserved pchars stay raw.
    ("/a%3ab", "/a%3Ab"),
    ("/a:b@c", "/a:b@c"),
    ("/a%3Bb", "/a%3Bb"),
    ("/a%3fb", "/a%3Fb"),
    ("/a%25b", "/a%25b"),
    ("/a%2Bb", "/a%2Bb"),
    ("/!$&'()*+,;=", "/!$&'()*+,;="),
    # Characters not allowed raw in a segment are encoded.
    ("/a b", "/a%20b"),
    ('/a"b', "/a%22b"),
    ("/<x>", "/%3Cx%3E"),
    ("/a{b}|c^`[]", "/a%7Bb%7D%7Cc%5E%60%5B%5D"),
    ("/a#b", "/a%23b"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES, ids=[repr(c[0]) for c in CASES])
def test_normalise_table(raw: str, expected: str | None) -> None:
    if expected is REJECT:
        with pytest.raises(InvalidPath):
            normalise_path(raw)
    else:
        assert normalise_path(raw) == expected
        assert normalise_path(expected) == expected


def test_reason_never_echoes_the_path() -> None:
    secret = "/s3cr3t-token\x00"
    with pytest.raises(InvalidPath) as info:
        normalise_path(secret)
    assert "s3cr3t" not in info.value.reason
    assert str(info.value) == info.value.reason
    assert isinstance(info.value, ValueError)


# --- properties -------------------------------------------------------------------

# Pieces chosen to hit every branch: dots, escapes of all kinds, separators, params.
_PIECES = [
    "/",
    "//",
    ".",
    "..",
    "a",
    "b",
    "é",
    "~",
    ";",
    ";x=1",
    "%2e",
    "%2E",
    "%2f",
    "%5c",
    "%41",
    "%7e",
    "%3b",
    "%3B",
    "%25",
    "%C3%A9",
    "%c3%a9",
    "%C0%AE",
    "%80",
    "%",
    "%z",
    "%00",
    "\x01",
    "\\",
    " ",
    "@",
    ":",
    "?",
    "%20",
    "%E2%82%AC",
    "\udc80",
]

_tricky_paths = st.lists(st.sampled_from(_PIECES), max_size=12).map(lambda p: "/" + "".join(p))
_any_paths = st.text(max_size=40).map(lambda s: "/" + s)
_paths = st.one_of(_tricky_paths, _any_paths)

_CANONICAL = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-F]{2})*")
_UNRESERVED_ESCAPE = re.compile(r"%(?:[46][1-9A-F]|[57][0-9A]|3[0-9]|2D|2E|5F|7E)")


def _accepted(raw: str) -> str:
    try:
        return normalise_path(raw)
    except InvalidPath:
        assume(False)
        raise


@given(_paths)
def test_idempotent(raw: str) -> None:
    once = _accepted(raw)
    assert normalise_path(once) == once


@given(_paths)
def test_output_is_canonical_and_safe(raw: str) -> None:
    out = _accepted(raw)
    assert out.startswith("/")
    assert _CANONICAL.fullmatch(out), out
    for bad in ("//", "/./", "/../", "\\", "%2F", "%5C", "%00"):
        assert bad not in out
    assert not out.endswith(("/.", "/.."))
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in out)
    assert not _UNRESERVED_ESCAPE.search(out), out


@given(_paths)
def test_fast_path_agrees_with_full_algorithm(raw: str) -> None:
    try:
        expected = _normalise_full(raw)
    except InvalidPath:
        with pytest.raises(InvalidPath):
            normalise_path(raw)
        return
    assert normalise_path(raw) == expected


@given(st.text(alphabet="abc/.;", max_size=30).map(lambda s: "/" + s))
def test_no_dot_segment_survives(raw: str) -> None:
    out = _accepted(raw)
    segments = out.split("/")
    assert "." not in segments
    assert ".." not in segments
