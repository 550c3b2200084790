"""One line per proxied request, JSON or text, to stdout. Never the key: its display prefix."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO


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
        self,
        enabled: bool = True,
        fmt: str = "json",
        stream: TextIO | None = None,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        """`redact` cleans the path of anything secret (keys pasted into URLs)."""
        self.enabled = enabled
        self.redact = redact
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
            "path": self.redact(exchange.path),
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
