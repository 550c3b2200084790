"""Request ids: kept from the client when well-formed, generated otherwise."""

from __future__ import annotations

import random
import re

_random = random.Random()  # noqa: S311 - ids need uniqueness, not secrecy
_VALID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def request_id(client_value: str | None) -> str:
    if client_value is not None and _VALID.fullmatch(client_value):
        return client_value
    # Request ids need to be unique, not unpredictable: no syscall per request.
    return _random.randbytes(16).hex()


def valid_traceparent(value: str | None) -> str | None:
    """The W3C traceparent if well-formed (stored in audit entries), else None."""
    if value is not None and _TRACEPARENT.fullmatch(value.strip()):
        return value.strip()
    return None
