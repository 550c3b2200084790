"""The key format: `<prefix><id:8><secret:32><checksum:6>`, all base62 after the prefix.

The checksum is CRC32 of everything before it, in base62, so typos and random strings are
rejected without touching a store and secret scanners can recognise leaked keys.
"""

from __future__ import annotations

import re
import secrets
import string
import zlib
from collections.abc import Mapping
from typing import NamedTuple

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_BASE62_SET = frozenset(BASE62)
ID_LENGTH = 8
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
BODY_LENGTH = ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
MAX_KEY_LENGTH = 16 + BODY_LENGTH
_BODY = re.compile(f"[0-9A-Za-z]{{{BODY_LENGTH}}}")
MAX_REFERENCE_LENGTH = 16 + ID_LENGTH  # the longest display prefix


class MalformedKey(ValueError):
    """The string is not a key of this gateway (shape, prefix or checksum)."""


class ParsedKey(NamedTuple):
    """A presented key's parts (a tuple: built on every authenticated request)."""

    prefix: str
    env: str
    key_id: str
    secret: str = ""

    @property
    def display_prefix(self) -> str:
        return self.prefix + self.key_id

    def __repr__(self) -> str:  # never show the secret, even in tracebacks
        return f"ParsedKey(display_prefix={self.display_prefix!r}, env={self.env!r})"


def random_base62(length: int) -> str:
    """`length` characters drawn uniformly from base62 with the `secrets` module."""
    return "".join(secrets.choice(BASE62) for _ in range(length))


# All 3,844 two-digit base62 strings, so a checksum is three look-ups, not six digits.
_PAIRS = tuple(a + b for a in BASE62 for b in BASE62)


def base62_checksum(text: str) -> str:
    """CRC32 of `text` as 6 zero-padded base62 digits (62**6 > 2**32)."""
    value = zlib.crc32(text.encode("ascii"))
    pairs = _PAIRS  # 62**4 = 14,776,336 and 62**2 = 3,844; the value is < 62**6
    return pairs[value // 14_776_336] + pairs[value // 3_844 % 3_844] + pairs[value % 3_844]


def generate_key(prefix: str, key_id: str | None = None) -> tuple[str, ParsedKey]:
    """A new full key for `prefix`; returns (full key, parsed parts without env)."""
    key_id = key_id or random_base62(ID_LENGTH)
    secret = random_base62(SECRET_LENGTH)
    body = prefix + key_id + secret
    return body + base62_checksum(body), ParsedKey(prefix, "", key_id, secret)


def parse_key(text: str, prefixes: Mapping[str, str]) -> ParsedKey:
    """Split a presented key into its parts; raise MalformedKey for anything off.

    `prefixes` maps env -> prefix. The prefix is whatever precedes the fixed-length body,
    so prefixes that share leading characters cannot be confused.
    """
    if len(text) <= BODY_LENGTH or len(text) > MAX_KEY_LENGTH:
        raise MalformedKey("wrong length")
    prefix = text[:-BODY_LENGTH]
    env = None
    for candidate, known in prefixes.items():
        if known == prefix:
            env = candidate
    if env is None:
        raise MalformedKey("unknown prefix")
    body = text[-BODY_LENGTH:]
    if not _BODY.fullmatch(body):
        raise MalformedKey("not base62")
    if base62_checksum(text[:-CHECKSUM_LENGTH]) != body[-CHECKSUM_LENGTH:]:
        raise MalformedKey("bad checksum")
    return ParsedKey(prefix, env, body[:ID_LENGTH], body[ID_LENGTH : ID_LENGTH + SECRET_LENGTH])


def is_key_id(text: str) -> bool:
    return len(text) == ID_LENGTH and _BASE62_SET.issuperset(text)


def split_key_reference(text: str) -> tuple[str | None, str]:
    """Split a KEY_ID argument (an id, or a display prefix) into (prefix or None, id).

    Raises MalformedKey when it cannot be either.
    """
    if is_key_id(text):
        return None, text
    prefix, key_id = text[:-ID_LENGTH], text[-ID_LENGTH:]
    if 1 <= len(prefix) <= 16 and is_key_id(key_id):
        return prefix, key_id
    # Echo the input only when it is too short to be a full key: a pasted key must not
    # come back in an error message (which may be logged or returned by the admin API).
    shown = repr(text) if len(text) <= MAX_REFERENCE_LENGTH else f"a {len(text)}-character value"
    raise MalformedKey(
        f"{shown} is not a key id (8 base62 characters)"
        " or a display prefix such as kg_live_a1B2c3D4"
    )


# A run of key characters long enough to end in a key: `<prefix 1-16><id><secret><checksum>`.
_KEY_RUN = re.compile(rf"[A-Za-z0-9_-]{{{BODY_LENGTH + 1},}}")
_BASE62_TAIL = re.compile(rf"[0-9A-Za-z]{{{BODY_LENGTH}}}")


def redact_keys(text: str) -> str:
    """`text` with every full key that ends a run of key characters cut to its display prefix.

    Clients do put keys in URLs; the checksum tells a key from any other long token, and only
    the run's end is tried, so a long path costs at most 16 checksums per run.
    """
    if len(text) <= BODY_LENGTH:
        return text

    def cut(match: re.Match[str]) -> str:
        run = match.group()
        for start in range(max(0, len(run) - BODY_LENGTH - 16), len(run) - BODY_LENGTH):
            candidate = run[start:]
            body, checksum = candidate[:-CHECKSUM_LENGTH], candidate[-CHECKSUM_LENGTH:]
            if (
                _BASE62_TAIL.fullmatch(candidate[-BODY_LENGTH:])
                and base62_checksum(body) == checksum
            ):
                display = candidate[: len(candidate) - BODY_LENGTH + ID_LENGTH]
                return run[:start] + display + "[redacted]"
        return run

    return _KEY_RUN.sub(cut, text)
