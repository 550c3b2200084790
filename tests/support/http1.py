"""A strict HTTP/1.1 message parser over byte buffers (RFC 9112), for tests on raw sockets.

Pure functions: each `take_*` looks at the start of a buffer and returns what it parsed
and how many bytes that used, None when more bytes are needed, or raises ProtocolError
for anything RFC 9112 calls invalid (obs-fold, whitespace before the colon, bare LF,
Content-Length and Transfer-Encoding together, conflicting lengths, bad chunk sizes).
Strict on purpose: the recording upstream uses it to show that what the gateway sends is
one unambiguous message, and the raw client uses it to read the gateway's answers.
(h11 would do; it is not a dependency of this project.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_HEAD = 256 * 1024
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/(1\.[01])")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([0-9]{3}) ([\t\x20-\x7e\x80-\xff]*)")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[^\r\n]*)?)")


class ProtocolError(Exception):
    """The bytes are not one valid HTTP/1.1 message."""


Fields = list[tuple[str, str]]


@dataclass
class Head:
    """A request or status line with its field lines, verbatim and parsed."""

    start: str
    lines: list[bytes]
    fields: Fields

    def all(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for k, v in self.fields if k.lower() == lower]


@dataclass
class RequestHead(Head):
    method: str = ""
    target: str = ""
    version: str = ""


@dataclass
class ResponseHead(Head):
    status: int = 0
    reason: str = ""
    version: str = ""


@dataclass(frozen=True)
class BodyFraming:
    """`length` bytes, chunked, to the end of the connection, or none."""

    kind: str  # "length" | "chunked" | "close" | "none"
    length: int = 0


@dataclass
class Chunked:
    body: bytes
    trailers: Fields = field(default_factory=list)
    extensions: list[bytes] = field(default_factory=list)


def _split_head(buf: bytes | bytearray) -> tuple[list[bytes], int] | None:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise ProtocolError("head too large")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    for line in lines:
        if b"\n" in line or b"\r" in line:
            raise ProtocolError("bare CR or LF in the head")
    return lines, end + 4


def parse_fields(lines: list[bytes]) -> Fields:
    """Field lines: token, colon, optional whitespace, a value without CTLs."""
    fields: Fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise ProtocolError("obs-fold")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise ProtocolError("malformed field line")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise ProtocolError("control character in a field value")
        fields.append((name.decode("ascii"), value.decode("latin-1")))
    return fields


def take_request_head(buf: bytes | bytearray) -> tuple[RequestHead, int] | None:
    split = _split_head(buf)
    if split is None:
        return None
    lines, used = split
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError("malformed request line")
    method, target, version = (g.decode("latin-1") for g in match.groups())
    head = RequestHead(
        lines[0].decode("latin-1"),
        lines[1:],
        parse_fields(lines[1:]),
        method=method,
        target=target,
        version=version,
    )
    return head, used


def take_response_head(buf: bytes | bytearray) -> tuple[ResponseHead, int] | None:
    split = _split_head(buf)
    if split is None:
        return None
    lines, used = split
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError("malformed status line")
    version, status, reason = (g.decode("latin-1") for g in match.groups())
    head = ResponseHead(
        lines[0].decode("latin-1"),
        lines[1:],
        parse_fields(lines[1:]),
        status=int(status),
        reason=reason,
        version=version,
    )
    return head, used


def _content_length(head: Head) -> int | None:
    values = [v.strip() for line in head.all("Content-Length") for v in line.split(",")]
    if not values:
        return None
    if any(not v.isascii() or not v.isdigit() for v in values) or len(set(values)) != 1:
        raise ProtocolError("invalid or conflicting Content-Length")
    return int(values[0])


def request_framing(head: RequestHead) -> BodyFraming:
    """RFC 9112 §6.3 for requests, refusing every case a careful server must refuse."""
    encodings = head.all("Transfer-Encoding")
    length = _content_length(head)
    if encodings:
        if length is not None:
            raise ProtocolError("Content-Length with Transfer-Encoding")
        codings = [c.strip().lower() for v in encodings for c in v.split(",")]
        if codings != ["chunked"]:
            raise ProtocolError("a transfer coding other than one chunked")
        return BodyFraming("chunked")
    if length:
        return BodyFraming("length", length)
    return BodyFraming("none")


def response_framing(head: ResponseHead, method: str) -> BodyFraming:
    if method == "HEAD" or head.status < 200 or head.status in (204, 304):
        return BodyFraming("none")
    encodings = head.all("Transfer-Encoding")
    if encodings:
        codings = [c.strip().lower() for v in encodings for c in v.split(",")]
        if codings[-1:] != ["chunked"]:
            return BodyFraming("close")
        return BodyFraming("chunked")
    length = _content_length(head)
    if length is None:
        return BodyFraming("close")
    return BodyFraming("length", length)


def take_chunked(buf: bytes | bytearray, start: int = 0) -> tuple[Chunked, int] | None:
    """A whole chunked body (with trailers) from `start`; None until it has all arrived."""
    body = bytearray()
    extensions: list[bytes] = []
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > 4096:
                raise ProtocolError("chunk size line too long")
            return None
        match = _CHUNK_SIZE.fullmatch(bytes(buf[pos:eol]))
        if match is None:
            raise ProtocolError("malformed chunk size line")
        size = int(match.group(1), 16)
        if match.group(2):
            extensions.append(match.group(2))
        pos = eol + 2
        if size == 0:
            break
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise ProtocolError("chunk data not followed by CRLF")
        pos += size + 2
    # Trailer section: field lines up to an empty line.
    if buf[pos : pos + 2] == b"\r\n":
        return Chunked(bytes(body), [], extensions), pos + 2
    if len(buf) < pos + 2:
        return None
    split = _split_head(buf[pos:])
    if split is None:
        return None
    lines, used = split
    return Chunked(bytes(body), parse_fields(lines), extensions), pos + used
