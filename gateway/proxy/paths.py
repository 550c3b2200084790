"""Request-path normalisation (spec §4, RFC 3986).

The normalised path is used twice: routes are matched against it *and* it is what the
upstream receives. Both must see the same bytes, so this module produces one canonical,
percent-encoded form and refuses anything that different servers could read differently
(encoded slashes, backslashes, control characters, invalid UTF-8, dot segments that
climb above the root or hide behind ``;`` parameters).

Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

import re

__all__ = ["InvalidPath", "normalise_path"]

# RFC 3986 §2.3. Escapes of these are decoded: they mean the same thing either way.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 §3.3 pchar without pct-encoded: what may appear raw inside a segment.
_PCHAR_RAW = _UNRESERVED | frozenset("!$&'()*+,;=:@")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")

# A whole path made only of raw pchars and '/'. Together with the absence of "//" and
# "/." (which rules out dot segments and ".;"-style segments) such a path is already
# canonical, which is the case for nearly every real request.
_FAST_PATH = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
# The same set for a single segment, used to skip the per-character loop.
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]*")

# Reasons are constants: they end up in client-facing error bodies and logs, so they
# must never echo the path itself.
_NOT_ABSOLUTE = "path must start with '/'"
_BAD_ESCAPE = "invalid percent-escape"
_ENCODED_SLASH = "encoded slash is not allowed"
_BACKSLASH = "backslash is not allowed"
_CONTROL = "control characters are not allowed"
_BAD_UTF8 = "percent-encoded bytes are not valid UTF-8"
_ABOVE_ROOT = "dot segments climb above the root"
_DOT_PARAMS = "dot segment with parameters is not allowed"


class InvalidPath(ValueError):
    """The request path cannot be normalised safely.

    ``reason`` is a short human text, one of a fixed set: it never echoes bytes of the path.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason: str = reason


def normalise_path(raw: str) -> str:
    """Return the canonical, percent-encoded form of a request path.

    ``raw`` is the path as received, without the query string. Escapes of unreserved
    characters are decoded, other escapes are kept with upper-case hex, characters not
    allowed raw in a segment are UTF-8 percent-encoded, runs of '/' are merged and dot
    segments are removed (RFC 3986 §5.2.4). A trailing slash is preserved.

    Raises InvalidPath for a path that does not start with '/', an invalid escape, an
    encoded slash, a backslash (raw or encoded), a control character (raw or encoded),
    percent-encoded bytes that are not valid UTF-8 (over-long forms included), a ``..``
    that would climb above the root, or a ``.``/``..`` segment carrying ``;`` parameters.

    The result is a fixed point: ``normalise_path(normalise_path(p)) == normalise_path(p)``.
    """
    if not raw.startswith("/"):
        raise InvalidPath(_NOT_ABSOLUTE)
    if _FAST_PATH.fullmatch(raw) and "//" not in raw and "/." not in raw:
        return raw
    return _normalise_full(raw)


def _normalise_full(raw: str) -> str:
    """The complete algorithm; ``normalise_path`` only skips it when it would be a no-op."""
    if not raw.startswith("/"):
        raise InvalidPath(_NOT_ABSOLUTE)
    segments = raw[1:].split("/")
    last = len(segments) - 1
    out: list[str] = []
    for i, raw_segment in enumerate(segments):
        segment = _canonical_segment(raw_segment)
        if segment == "":
            # Merge runs of '/': an empty segment only survives as the final one, where it
            # stands for the trailing slash.
            if i == last:
                out.append("")
            continue
        if segment == ".":
            if i == last:
                out.append("")
            continue
        if segment == "..":
            if not out:
                # Clamping silently would authorise one path and forward another.
                raise InvalidPath(_ABOVE_ROOT)
            out.pop()
            if i == last:
                out.append("")
            continue
        if _is_dot_with_params(segment):
            raise InvalidPath(_DOT_PARAMS)
        out.append(segment)
    return "/" + "/".join(out)


def _is_dot_with_params(segment: str) -> bool:
    # Servlet containers strip ";params" before resolving dot segments, so "/..;/admin"
    # reaches "/admin" behind us. Some stacks decode first, so "%3B" counts as well.
    for dots in ("..", "."):
        if segment.startswith(dots):
            rest = segment[len(dots) :]
            return rest.startswith(";") or rest.upper().startswith("%3B")
    return False


def _canonical_segment(segment: str) -> str:
    """Canonicalise one segment (no '/' inside); dot segments are left for the caller."""
    if _SAFE_SEGMENT.fullmatch(segment):
        return segment
    out: list[str] = []
    i = 0
    n = len(segment)
    while i < n:
        ch = segment[i]
        if ch != "%":
            out.append(_encode_raw(ch))
            i += 1
            continue
        # Decode a whole run of escapes together: a multi-byte UTF-8 character spans
        # several of them, and only the complete run can be validated.
        run = bytearray()
        while i < n and segment[i] == "%":
            hex_pair = segment[i + 1 : i + 3]
            if len(hex_pair) != 2 or not (hex_pair[0] in _HEXDIGITS and hex_pair[1] in _HEXDIGITS):
                raise InvalidPath(_BAD_ESCAPE)
            run.append(int(hex_pair, 16))
            i += 3
        try:
            # Strict UTF-8 refuses over-long forms (%C0%AE), surrogates and stray
            # continuation bytes, which other decoders may turn into '.' or '/'.
            text = run.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPath(_BAD_UTF8) from None
        out.extend(_encode_decoded(c) for c in text)
    return "".join(out)


def _encode_decoded(ch: str) -> str:
    """The canonical form of a character that arrived percent-encoded."""
    if ch in _UNRESERVED:
        return ch
    if ch == "/":
        raise InvalidPath(_ENCODED_SLASH)
    _refuse_dangerous(ch)
    # Reserved and other characters stay encoded: "%3B" and ";" can mean different
    # things to the upstream, so the client's choice is kept.
    return _pct_encode(ch)


def _encode_raw(ch: str) -> str:
    """The canonical form of a character that arrived raw."""
    if ch in _PCHAR_RAW:
        return ch
    _refuse_dangerous(ch)
    return _pct_encode(ch)


def _refuse_dangerous(ch: str) -> None:
    if ch == "\\":
        raise InvalidPath(_BACKSLASH)
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        raise InvalidPath(_CONTROL)


def _pct_encode(ch: str) -> str:
    try:
        data = ch.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: aiohttp decodes undecodable raw bytes with surrogateescape.
        raise InvalidPath(_BAD_UTF8) from None
    return "".join(f"%{b:02X}" for b in data)
