"""Application logs (stderr): JSON lines by default, RFC 3339 UTC times, no exception messages.

Exception messages may quote input (a header, a request line, a key); stack frames name
only code. Both formatters print `traceback_without_messages` instead of `logging`'s usual
traceback, so nothing logged with `exc_info`, by us or by a library, can carry request data.
The access log (stdout) is separate: `gateway.observability.access_log`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def rfc3339(seconds: float) -> str:
    """`2026-12-04T14:46:12.457Z`: UTC, millisecond precision, the access log's format."""
    whole = int(seconds)
    millis = min(int((seconds - whole) * 1000), 999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def traceback_without_messages(exc: BaseException) -> str:
    """An exception's stack frames and type names, its chain included, never its message."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    parts: list[str] = []
    for link in reversed(chain):
        if parts:
            parts.append("\nThe above exception led to:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(link.__traceback__))
        kind = type(link)
        parts.append(f"{kind.__module__}.{kind.__qualname__}\n")
    return "".join(parts).rstrip("\n")


class TextFormatter(logging.Formatter):
    """`<RFC 3339 UTC time> LEVEL logger: message`, tracebacks without messages."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created)

    def formatException(self, ei: Any) -> str:
        return traceback_without_messages(ei[1]) if ei[1] is not None else ""


class JsonFormatter(TextFormatter):
    """One JSON object per line: time, level, logger, message (+ error, traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = type(record.exc_info[1]).__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Route every logger (ours, aiohttp's, asyncio's) to one stderr handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
