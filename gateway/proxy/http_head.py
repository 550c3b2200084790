"""One HTTP/1.1 message head as bytes, for the code that writes heads itself (the lean
upstream client's requests, the check listener's answers)."""

from __future__ import annotations

from collections.abc import Iterable


def http_head(first_line: str, fields: Iterable[tuple[str, str]]) -> bytes:
    """The first line, `name: value` per field, the empty line: bytes for one write.

    A CR or LF inside the first line, a name or a value (which would end the head early
    and start a message of its own) raises ValueError, as aiohttp's writer does. Text is
    encoded as it was decoded from the wire (UTF-8, surrogateescape)."""
    lines = [first_line]
    lines += [f"{name}: {value}" for name, value in fields]
    text = "\r\n".join(lines)
    breaks = len(lines) - 1  # exactly the CRLFs joined in, and nothing else
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise ValueError("newline or carriage return in an HTTP header")
    return (text + "\r\n\r\n").encode("utf-8", "surrogateescape")
