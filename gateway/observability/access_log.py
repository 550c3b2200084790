"""One line per proxied request, JSON or text, to stdout. Never the key: its display prefix."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from typing import Any, Protocol, TextIO

from gateway.keys.format import BODY_LENGTH, CHECKSUM_LENGTH, ID_LENGTH, base62_checksum

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
            if _BASE62_TAIL.fullmatch(candidate[-BODY_LENGTH:]) and \
                    base62_checksum(body) == checksum:
                display = candidate[: len(candidate) - BODY_LENGTH + ID_LENGTH]
                return run[:start] + display + "[redacted]"
        return run

    return _KEY_RUN.sub(cut, text)


class _Exchange(Protocol):
    request_id: str
    method: str
    path: str
    route: str

    @property
    def key(self) -> Any: ...


# json.dumps builds a new encoder per call when given options; this one is built once.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


class AccessLog:
    def __init__(
        self, enabled: bool = True, fmt: str = "json", stream: TextIO | None = None
    ) -> None:
        self.enabled = enabled
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self._second = -1
        self._second_text = ""

    def _timestamp(self) -> str:
        """UTC, millisecond precision; the formatted second is reused within a second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(now % 1 * 1000):03d}Z"

    def write(self, exchange: _Exchange, status: int, outcome: str, duration: float) -> None:
        if not self.enabled:
            return
        key = exchange.key
        record = {
            "time": self._timestamp(),
            "request_id": exchange.request_id,
            "method": exchange.method,
            "path": redact_keys(exchange.path),
            "route": exchange.route,
            "status": status,
            "outcome": outcome,
            "duration_ms": round(duration * 1000, 3),
            "key": key.display_prefix if key is not None else None,
            "org": key.org if key is not None else None,
        }
        if self.fmt == "json":
            line = _encode_json(record)
        else:
            line = " ".join(f"{k}={'-' if v is None else v}" for k, v in record.items())
        with contextlib.suppress(OSError, ValueError):  # a closed stdout must not fail requests
            self.stream.write(line + "\n")
