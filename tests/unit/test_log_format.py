"""Application log formatters: RFC 3339 UTC times, exception types and frames, never messages."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from gateway.observability.logs import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    rfc3339,
    traceback_without_messages,
)

SECRET = "kg_live_SECRETSECRETSECRET"


def _raised() -> BaseException:
    try:
        try:
            raise KeyError(SECRET)
        except KeyError as inner:
            raise ValueError(f"bad header {SECRET}") from inner
    except ValueError as exc:
        return exc


def _record(exc: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request",
        None,
        (type(exc), exc, exc.__traceback__),
    )


def test_traceback_has_frames_and_types_but_no_message() -> None:
    text = traceback_without_messages(_raised())
    assert SECRET not in text
    assert "builtins.KeyError" in text and "builtins.ValueError" in text
    assert "_raised" in text  # the frames are there


def test_json_and_text_formatters_never_print_messages() -> None:
    exc = _raised()
    entry = json.loads(JsonFormatter().format(_record(exc)))
    assert entry["error"] == "ValueError"
    assert SECRET not in json.dumps(entry)
    text = TextFormatter("%(message)s").format(_record(exc))
    assert SECRET not in text and "Traceback" in text


RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1796395572.4579, "2026-12-04T14:46:12.457Z"),
        (1796395572.9999, "2026-12-04T14:46:12.999Z"),  # never rounded up into the next second
    ],
)
def test_rfc3339_is_utc_with_milliseconds(seconds: float, text: str) -> None:
    assert rfc3339(seconds) == text


@pytest.fixture
def restored_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restored_root")
def test_configured_json_lines_carry_rfc3339_utc_times() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    logging.getLogger("keygate.test").info("hello %s", "world")
    logging.getLogger("aiohttp.access").debug("below the level")
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry == {
        "time": entry["time"],
        "level": "info",
        "logger": "keygate.test",
        "message": "hello world",
    }
    assert RFC3339_UTC.fullmatch(entry["time"]), entry["time"]


@pytest.mark.usefixtures("restored_root")
def test_configured_text_lines_start_with_an_rfc3339_utc_time() -> None:
    stream = io.StringIO()
    configure_logging("text", "warning", stream)
    logging.getLogger("keygate.test").warning("careful")
    time_text, rest = stream.getvalue().rstrip("\n").split(" ", 1)
    assert RFC3339_UTC.fullmatch(time_text), time_text
    assert rest == "WARNING keygate.test: careful"
