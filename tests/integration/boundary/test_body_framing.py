"""Failure class 1: request bodies reach the upstream exactly as received, framed by the
gateway; framing in doubt is refused and the connection closed; a connection on which
the request was not written completely never carries another request.

The upstream here answers before reading bodies and parses what follows as the next
request (tests/support/recording_upstream.py): any desynchronisation shows up as a request
nobody sent through the gateway.
"""

from __future__ import annotations

import asyncio
import gzip

import pytest

from tests.integration.boundary.rawhttp import exchange_all, open_raw, responses_until_close
from tests.integration.boundary.recorded import Recorded
from tests.integration.proxy.harness import raw_error
from tests.integration.proxy.wire import close_writer, read_response, request_bytes
from tests.support.recording_upstream import Recorded as Seen

SMUGGLED = b"GET /raw/smuggled HTTP/1.1\r\nHost: x\r\nX-Keygate-Org: evil\r\n\r\n"


def smuggling_gzip() -> bytes:
    """A gzip body whose length equals the padding in front of a request inside it.

    Decoded, the body is N bytes of padding then SMUGGLED, with N = len(gzip body): an
    upstream that receives the decoded bytes under the client's Content-Length stops
    exactly where SMUGGLED starts, and reads it as a request of its own.
    """
    padding = 0
    while True:
        body = gzip.compress(b"A" * padding + SMUGGLED, mtime=0)
        if len(body) == padding:
            return body
        padding = len(body)


def assert_only(seen: list[Seen], targets: list[str]) -> None:
    """The upstream parsed exactly these requests, and no identity the client forged."""
    assert [s.head.target for s in seen] == targets, [s.head.start for s in seen]
    for s in seen:
        fields = s.head.fields
        assert not any(k.lower().startswith("x-keygate") for k, _ in fields), fields


@pytest.mark.parametrize("connection", [None, "content-length", "content-encoding"])
async def test_gzip_body_is_forwarded_byte_for_byte(gw: Recorded, connection: str | None) -> None:
    body = smuggling_gzip()
    headers = [("Content-Encoding", "gzip"), ("Content-Length", str(len(body)))]
    if connection:
        headers.append(("Connection", connection))
    replies, _ = await exchange_all(
        gw.port, request_bytes("POST", "/raw/upload", headers, body), wait=3
    )
    assert replies and replies[0].status == 200
    seen = gw.upstream.wait_for(1)
    assert_only(seen, ["/raw/upload"])
    assert seen[0].body == body  # the compressed bytes, never decoded
    assert seen[0].head.all("Content-Length") == [str(len(body))]
    assert seen[0].head.all("Content-Encoding") == ["gzip"]


async def test_chunked_body_is_rechunked_with_the_same_bytes(gw: Recorded) -> None:
    body = smuggling_gzip()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    headers = [
        ("Content-Encoding", "gzip"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "transfer-encoding"),
    ]
    replies, _ = await exchange_all(
        gw.port, request_bytes("POST", "/raw/chunked", headers, chunked), wait=3
    )
    assert replies and replies[0].status == 200
    seen = gw.upstream.wait_for(1)
    assert_only(seen, ["/raw/chunked"])
    assert seen[0].body == body
    assert seen[0].head.all("Transfer-Encoding") == ["chunked"]
    assert seen[0].head.all("Content-Length") == []


@pytest.mark.parametrize(
    "framing",
    [
        [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
        [("Transfer-Encoding", "gzip, chunked")],
        [("Transfer-Encoding", "identity")],
        [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
        [("Content-Length", "5"), ("Content-Length", "6")],
        [("Content-Length", "5"), ("Content-Length", "5")],
        [("Content-Length", "5, 5")],
        [("Content-Length", "+5")],
    ],
    ids=[
        "cl-te",
        "te-cl",
        "te-gzip-chunked",
        "te-identity",
        "te-twice",
        "cl-differ",
        "cl-twice",
        "cl-list",
        "cl-sign",
    ],
)
async def test_framing_in_doubt_is_400_and_closes(
    gw: Recorded, framing: list[tuple[str, str]]
) -> None:
    data = request_bytes("POST", "/raw/doubt", framing, b"5\r\nhello\r\n0\r\n\r\n")
    data += request_bytes("GET", "/raw/after", [("X-Keygate-Org", "evil")])
    replies, closed = await exchange_all(gw.port, data, wait=3)
    assert len(replies) == 1, [r.status for r in replies]
    raw_error(replies[0], 400, "invalid_request")
    assert closed
    await asyncio.sleep(0.2)
    assert gw.upstream.snapshot() == ([], [])


async def test_pipelined_request_after_a_short_body_is_its_own_request(gw: Recorded) -> None:
    first = request_bytes("POST", "/raw/first", [("Content-Length", "5")], b"hello")
    second = request_bytes(
        "GET", "/raw/second", [("X-Keygate-Org", "evil"), ("X_Keygate_Org", "evil")]
    )
    reader, writer = await open_raw(gw.port)
    try:
        writer.write(first + second)
        await writer.drain()
        replies = [await asyncio.wait_for(read_response(reader), 5) for _ in range(2)]
    finally:
        await close_writer(writer)
    assert [r.status for r in replies] == [200, 200]
    seen = gw.upstream.wait_for(2)
    assert [s.head.target for s in seen] == ["/raw/first", "/raw/second"]
    assert seen[0].body == b"hello"
    assert seen[1].body == b""


async def test_incomplete_upload_never_leaves_a_pooled_connection_behind(gw: Recorded) -> None:
    # Client 1 declares 1000 bytes, sends 10 and goes away after the upstream's early answer.
    reader, writer = await open_raw(gw.port)
    writer.write(request_bytes("POST", "/raw/cut", [("Content-Length", "1000")], b"x" * 10))
    await writer.drain()
    first = await asyncio.wait_for(read_response(reader), 5)
    assert first.status == 200
    await close_writer(writer)
    await asyncio.sleep(0.3)
    # Client 2 (and 3, to give a pooled connection every chance) on fresh connections.
    for target in ("/raw/next", "/raw/third"):
        replies, _ = await exchange_all(gw.port, request_bytes("GET", target), wait=2)
        assert replies and replies[0].status == 200
        assert replies[0].body.startswith(f"seen GET {target} ".encode()), replies[0].body
    seen = gw.upstream.requests()
    assert [s.head.target for s in seen] == ["/raw/cut", "/raw/next", "/raw/third"]
    assert seen[0].connection not in {seen[1].connection, seen[2].connection}
    assert seen[1].head.method == seen[2].head.method == "GET"


async def test_stalled_upload_after_an_early_answer_closes_the_upstream_connection(
    gw: Recorded,
) -> None:
    # The client stays connected but stops sending: the gateway gives up on the body and
    # must not hand the half-written connection to the next request.
    reader, writer = await open_raw(gw.port)
    try:
        writer.write(request_bytes("PUT", "/raw/stall", [("Content-Length", "100")], b"y" * 50))
        await writer.drain()
        first = await asyncio.wait_for(read_response(reader), 5)
        assert first.status == 200
        replies, _ = await exchange_all(gw.port, request_bytes("PUT", "/raw/then"), wait=2)
        assert replies and replies[0].body.startswith(b"seen PUT /raw/then "), replies[0].body
        _, closed = await responses_until_close(reader, wait=5)
        assert closed  # the unfinished body is not waited for forever either
    finally:
        await close_writer(writer)
    seen = gw.upstream.requests()
    assert [s.head.target for s in seen] == ["/raw/stall", "/raw/then"]
    assert seen[0].connection != seen[1].connection
