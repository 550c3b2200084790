"""What every command shares: exit codes, the one-line user error, and printing."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

from gateway.keys.models import Actor

EXIT_OK, EXIT_USER_ERROR, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 1."""


def cli_actor() -> Actor:
    """The audit principal of a CLI command: `cli:<login name>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(principal=f"cli:{user}")


class Output:
    """stdout (data) and stderr (messages), in JSON or human form."""

    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err

    def json(self, value: Any) -> None:
        json.dump(value, self.out, indent=2, sort_keys=False)
        self.out.write("\n")

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def fields(self, data: dict[str, Any]) -> None:
        """`name  value` lines, names aligned; None prints as `-`."""
        width = max(len(k) for k in data)
        for field, value in data.items():
            self.line(f"{field.ljust(width)}  {'-' if value is None else value}")

    def table(
        self, headers: Sequence[str], rows: Iterator[Sequence[str]] | list[Sequence[str]]
    ) -> None:
        rows = [list(map(str, r)) for r in rows]
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(headers)
        ]
        self.line("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
        for r in rows:
            self.line("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def short_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"
