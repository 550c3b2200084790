"""gateway.proxy.framing: message-level refusals, as tables of hostile inputs."""

from __future__ import annotations

import base64

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy.errors import BadRequest, BadWebSocketHandshake, HeadersTooLarge
from gateway.proxy.framing import (
    Framing,
    check_header_size,
    check_target,
    check_websocket_handshake,
    framing,
    is_websocket_upgrade,
)

KEY = base64.b64encode(bytes(16)).decode()


def h(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((), Framing(None, False)),
        ((("Content-Length", "0"),), Framing(0, False)),
        ((("content-length", "12"),), Framing(12, False)),
        ((("Transfer-Encoding", "chunked"),), Framing(None, True)),
        ((("Transfer-Encoding", " Chunked "),), Framing(None, True)),
    ],
)
def test_framing_accepted(headers: tuple[tuple[str, str], ...], expected: Framing) -> None:
    assert framing(h(*headers)) == expected


@pytest.mark.parametrize(
    "headers",
    [
        (("Content-Length", "5"), ("Transfer-Encoding", "chunked")),
        (("Transfer-Encoding", "gzip, chunked"),),
        (("Transfer-Encoding", "chunked, gzip"),),
        (("Transfer-Encoding", "identity"),),
        (("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")),
        (("Content-Length", "5"), ("Content-Length", "5")),
        (("Content-Length", "5, 5"),),
        (("Content-Length", "+5"),),
        (("Content-Length", "-1"),),
        (("Content-Length", "0x10"),),
        (("Content-Length", "١٢"),),  # non-ASCII digits
        (("Content-Length", ""),),
    ],
)
def test_framing_in_doubt(headers: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(BadRequest) as refused:
        framing(h(*headers))
    assert refused.value.close_connection


@pytest.mark.parametrize(
    ("method", "target"),
    [("CONNECT", "example.com:443"), ("GET", "/a#b"), ("GET", "/a?x=1#frag"), ("GET", "/#")],
)
def test_refused_targets(method: str, target: str) -> None:
    with pytest.raises(BadRequest) as refused:
        check_target(method, target)
    assert target not in refused.value.message


def test_plain_target_accepted() -> None:
    check_target("GET", "/a/b?c=%23")


@pytest.mark.parametrize(
    ("raw", "refused"),
    [
        ([(b"A", b"b")] * 10, False),
        ([(b"A", b"b")] * 11, True),  # over the count
        ([(b"A", b"b" * 90)], False),  # 1 + 90 + 4 = 95 bytes
        ([(b"A", b"b" * 96)], True),  # 101 bytes
    ],
)
def test_header_size(raw: list[tuple[bytes, bytes]], refused: bool) -> None:
    if refused:
        with pytest.raises(HeadersTooLarge):
            check_header_size(raw, max_count=10, max_bytes=100)
    else:
        check_header_size(raw, max_count=10, max_bytes=100)


GOOD = (
    ("Upgrade", "websocket"),
    ("Connection", "keep-alive, Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
)


def without(name: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(p for p in GOOD if p[0] != name) + extra


def test_valid_handshake() -> None:
    check_websocket_handshake("GET", (1, 1), h(*GOOD))


@pytest.mark.parametrize(
    ("method", "version", "headers"),
    [
        ("POST", (1, 1), GOOD),
        ("GET", (1, 0), GOOD),
        ("GET", (2, 0), GOOD),
        ("GET", (1, 1), without("Connection")),
        ("GET", (1, 1), without("Connection", ("Connection", "keep-alive"))),
        ("GET", (1, 1), without("Sec-WebSocket-Key")),
        ("GET", (1, 1), without("Sec-WebSocket-Key", ("Sec-WebSocket-Key", "short"))),
        (
            "GET",
            (1, 1),
            without(
                "Sec-WebSocket-Key", ("Sec-WebSocket-Key", base64.b64encode(bytes(17)).decode())
            ),
        ),
        ("GET", (1, 1), without("Sec-WebSocket-Key", ("Sec-WebSocket-Key", "!" * 24))),
        ("GET", (1, 1), (*GOOD, ("Sec-WebSocket-Key", KEY))),
        ("GET", (1, 1), without("Sec-WebSocket-Version")),
        ("GET", (1, 1), without("Sec-WebSocket-Version", ("Sec-WebSocket-Version", "8"))),
        ("GET", (1, 1), without("Sec-WebSocket-Version", ("Sec-WebSocket-Version", "13, 8"))),
    ],
)
def test_malformed_handshakes(
    method: str, version: tuple[int, int], headers: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(BadWebSocketHandshake) as refused:
        check_websocket_handshake(method, version, h(*headers))
    assert refused.value.headers() == {"Sec-WebSocket-Version": "13"}


@pytest.mark.parametrize(
    ("value", "upgrade"),
    [("websocket", True), ("WebSocket", True), ("h2c, websocket", True), ("h2c", False)],
)
def test_is_websocket_upgrade(value: str, upgrade: bool) -> None:
    assert is_websocket_upgrade(h(("Upgrade", value))) is upgrade
