"""One line per proxied request, JSON or text, to stdout. Never the key: its display prefix."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol, TextIO


class _Exchange(Protocol):
    request_id: str
    method: str
    path: str
    route: str

    @property
    def key(self) -> Any: ...


class AccessLog:
    def __init__(self, enabled: bool = True, fmt: str = "json", stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.fmt = fmt
        self.stream = stream or sys.stdout

    def write(self, exchange: _Exchange, status: int, outcome: str, duration: float) -> None:
        if not self.enabled:
            return
        key = exchange.key
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() % 1 * 1000):03d}Z",
            "request_id": exchange.request_id,
            "method": exchange.method,
            "path": exchange.path,
            "route": exchange.route,
            "status": status,
            "outcome": outcome,
            "duration_ms": round(duration * 1000, 3),
            "key": key.display_prefix if key is not None else None,
            "org": key.org if key is not None else None,
        }
        if self.fmt == "json":
            line = json.dumps(record, separators=(",", ":"))
        else:
            line = " ".join(f"{k}={'-' if v is None else v}" for k, v in record.items())
        try:
            self.stream.write(line + "\n")
        except (OSError, ValueError):
            pass  # a closed stdout must not fail requests
