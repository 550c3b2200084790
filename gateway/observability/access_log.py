"""One line per request (proxy and admin API), JSON or text, to stdout. Never a key: its
display prefix, also when a known key is refused (revoked, expired, wrong secret). A user
token (SPEC §11) is named by its subject (`"key": null, "org", "subject"`), never the token.

Lines are gathered in memory and written together every `flush_interval` seconds (by the
gateway's `access-log-flush` task), on shutdown, and whenever MAX_PENDING lines wait: one
write per batch instead of one per request (with an unbuffered stdout, as under
PYTHONUNBUFFERED=1 in most container images, each write is a system call). An interval
of 0 writes every line at once.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol, TextIO


class _Exchange(Protocol):
    request_id: str
    method: str
    path: str
    route: str
    client: str | None
    user_agent: str | None

    @property
    def key(self) -> Any: ...


MAX_PENDING = 512  # lines; bounds memory and how far a burst can run ahead of the log

_q = encode_basestring_ascii  # a JSON string literal, escaped, in quotes


class AccessLog:
    def __init__(
        self,
        enabled: bool = True,
        fmt: str = "json",
        stream: TextIO | None = None,
        redact: Callable[[str], str] = lambda text: text,
        flush_interval: float = 0.0,
    ) -> None:
        """`redact` cleans the path of anything secret (keys pasted into URLs)."""
        self.enabled = enabled
        self.redact = redact
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self.flush_interval = flush_interval
        self._pending: list[str] = []
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
        when = self._timestamp()
        path = self.redact(exchange.path)
        client = exchange.client
        agent = exchange.user_agent
        if agent is not None:
            agent = self.redact(agent[:256])  # bounded, and never a key pasted into it
        duration_ms = round(duration * 1000, 3)
        user = getattr(exchange, "user", None)  # a user token's identity (proxy only)
        if self.fmt == "json":
            # Formatted directly (a quarter of the time of a dict through json's encoder);
            # every string goes through json's own escaping, so any value stays one field.
            if key:
                who = f'{_q(key.display_prefix)},"org":{_q(key.org)}'
            elif user:
                who = f'null,"org":{_q(user.org)},"subject":{_q(user.subject)}'
            else:
                who = 'null,"org":null'
            line = (
                f'{{"time":"{when}","request_id":{_q(exchange.request_id)},'
                f'"method":{_q(exchange.method)},"path":{_q(path)},"route":{_q(exchange.route)},'
                f'"status":{status},"outcome":{_q(outcome)},"duration_ms":{duration_ms},'
                f'"key":{who},"client":{_q(client) if client else "null"},'
                f'"user_agent":{_q(agent) if agent is not None else "null"}}}\n'
            )
        else:
            line = (
                f"time={when} request_id={exchange.request_id} method={exchange.method} "
                f"path={path} route={exchange.route} status={status} outcome={outcome} "
                f"duration_ms={duration_ms} key={key.display_prefix if key else '-'} "
                f"org={key.org if key else user.org if user else '-'} "
                f"{f'subject={_text_value(user.subject)} ' if user else ''}client={client or '-'} "
                f"user_agent={_q(agent) if agent is not None else '-'}\n"
            )
        pending = self._pending
        pending.append(line)
        if not self.flush_interval or len(pending) >= MAX_PENDING:
            self.flush()

    def write_fields(self, fields: Mapping[str, str | int | float | None]) -> None:
        """A line of named fields after the time (the admin API's lines; low volume)."""
        if not self.enabled:
            return
        if self.fmt == "json":
            line = json.dumps({"time": self._timestamp(), **fields}, separators=(",", ":"))
        else:
            line = " ".join(
                [f"time={self._timestamp()}"]
                + [f"{name}={_text_value(value)}" for name, value in fields.items()]
            )
        self._pending.append(line + "\n")
        if not self.flush_interval or len(self._pending) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Write the gathered lines in one call."""
        if not self._pending:
            return
        text, self._pending = "".join(self._pending), []
        with contextlib.suppress(OSError, ValueError):  # a closed stdout must not fail requests
            self.stream.write(text)
            self.stream.flush()


def _text_value(value: str | int | float | None) -> str:
    """A text-format value: `-` for none, quoted when it could run into the next field or
    holds anything but printable ASCII (escaped: no terminal escape sequence, no byte a
    client sent that is not UTF-8, reaches the log)."""
    if value is None:
        return "-"
    text = str(value)
    if not text or not (text.isascii() and text.isprintable()) or any(c in ' "=\\' for c in text):
        return _q(text)
    return text
