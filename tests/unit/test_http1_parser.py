"""The strict HTTP/1.1 parser the boundary tests use as their oracle (tests/support/http1.py):
it must refuse what a careful server refuses, or the differential test proves nothing."""

from __future__ import annotations

import pytest

from tests.support.http1 import (
    ProtocolError,
    request_framing,
    take_chunked,
    take_request_head,
)


def _framing(head: bytes) -> tuple[str, int]:
    parsed = take_request_head(head)
    assert parsed is not None
    framing = request_framing(parsed[0])
    return framing.kind, framing.length


@pytest.mark.parametrize(
    ("head", "framing"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", ("length", 5)),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", ("length", 5)),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", ("chunked", 0)),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", ("none", 0)),
        # Aliases are separate fields to a strict parser: they frame nothing.
        (b"POST / HTTP/1.1\r\nContent_Length: 5\r\n\r\n", ("none", 0)),
    ],
)
def test_framing(head: bytes, framing: tuple[str, int]) -> None:
    assert _framing(head) == framing


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent Length: 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
        b"POST / HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n",
        b"POST  / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/2.0\r\n\r\n",
        b"d-123 HTTP/1.1\r\n\r\n",
    ],
)
def test_refused_heads(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        _framing(head)


def test_incomplete_head_needs_more() -> None:
    assert take_request_head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n") is None


@pytest.mark.parametrize(
    ("data", "body", "used"),
    [
        (b"5\r\nhello\r\n0\r\n\r\nNEXT", b"hello", 15),
        (b"05;ext=1\r\nhello\r\n0\r\n\r\n", b"hello", 22),
        (b"A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n", b"0123456789", 28),
        (b"5\r\nhel", None, 0),
        (b"0\r\n", None, 0),
    ],
)
def test_chunked(data: bytes, body: bytes | None, used: int) -> None:
    got = take_chunked(data)
    if body is None:
        assert got is None
    else:
        assert got is not None and (got[0].body, got[1]) == (body, used)


@pytest.mark.parametrize("data", [b"0x5\r\nhello\r\n0\r\n\r\n", b"-5\r\n", b"5\r\nhelloXX0\r\n"])
def test_bad_chunks(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        take_chunked(data)
