"""Checks on a parsed request before the gateway acts on it: pure, no I/O.

aiohttp's parser already refuses much (CL with TE, malformed chunking, over-long lines);
these close what it lets through, or what older aiohttp releases let through: anything
that could make the upstream frame the message differently from the gateway, targets
and methods a reverse proxy must not serve, header sections over the configured size,
and WebSocket handshakes that RFC 6455 §4.2.1 calls malformed. Each check raises one
Refusal whose message never quotes the input.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from multidict import CIMultiDictProxy

from gateway.proxy.errors import BadRequest, BadWebSocketHandshake, HeadersTooLarge

RawHeaders = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Framing:
    """How the body is delimited: `length` bytes, chunked, or no body at all."""

    length: int | None
    chunked: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.length)


NO_BODY = Framing(None, False)


def check_target(method: str, raw_target: str) -> None:
    """CONNECT is never proxied; a fragment is never part of a request target."""
    if method == "CONNECT":
        raise BadRequest("CONNECT is not supported.")
    if "#" in raw_target:
        raise BadRequest("The request target must not contain a fragment ('#').")


def check_header_size(raw_headers: RawHeaders, *, max_count: int, max_bytes: int) -> None:
    """431 for too many fields or too many bytes in the whole section (name: value CRLF)."""
    if len(raw_headers) > max_count:
        raise HeadersTooLarge()
    total = 0
    for name, value in raw_headers:
        total += len(name) + len(value) + 4
    if total > max_bytes:
        raise HeadersTooLarge()


def framing(headers: CIMultiDictProxy[str]) -> Framing:
    """The body's framing, or 400 when there is any doubt about it (RFC 9112 §6.3)."""
    encodings = headers.getall("Transfer-Encoding", ())
    lengths = headers.getall("Content-Length", ())
    if encodings:
        if lengths:
            raise BadRequest("Send Content-Length or Transfer-Encoding, not both.")
        if len(encodings) != 1 or encodings[0].strip().lower() != "chunked":
            raise BadRequest("The only Transfer-Encoding accepted is 'chunked'.")
        return Framing(None, True)
    if not lengths:
        return NO_BODY
    if len(lengths) != 1 or not lengths[0].isascii() or not lengths[0].isdigit():
        raise BadRequest("Content-Length must be one decimal number.")
    return Framing(int(lengths[0]), False)


def check_websocket_handshake(
    method: str, version: tuple[int, int], headers: CIMultiDictProxy[str]
) -> None:
    """RFC 6455 §4.2.1, for a request that asks to upgrade to a WebSocket."""
    if method != "GET" or version != (1, 1):
        raise BadWebSocketHandshake()
    tokens = {
        token.strip().lower()
        for value in headers.getall("Connection", ())
        for token in value.split(",")
    }
    if "upgrade" not in tokens:
        raise BadWebSocketHandshake()
    keys = headers.getall("Sec-WebSocket-Key", ())
    if len(keys) != 1 or not _is_nonce(keys[0].strip()):
        raise BadWebSocketHandshake()
    versions = headers.getall("Sec-WebSocket-Version", ())
    if len(versions) != 1 or versions[0].strip() != "13":
        raise BadWebSocketHandshake()


def _is_nonce(value: str) -> bool:
    """Base64 of exactly 16 bytes (24 characters, two of them padding)."""
    if len(value) != 24 or not value.isascii():
        return False
    try:
        return len(base64.b64decode(value, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def is_websocket_upgrade(headers: CIMultiDictProxy[str]) -> bool:
    """Whether the client asks for a WebSocket (any spelling, any position in the list)."""
    return any(
        token.strip().lower() == "websocket"
        for value in headers.getall("Upgrade", ())
        for token in value.split(",")
    )
