"""gateway.server's log formatters print exception types and frames, never messages."""

from __future__ import annotations

import json
import logging

from gateway.server import _JsonFormatter, _NoMessageTracebacks, traceback_without_messages

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
    return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                             "Error handling request", None, (type(exc), exc, exc.__traceback__))


def test_traceback_has_frames_and_types_but_no_message() -> None:
    text = traceback_without_messages(_raised())
    assert SECRET not in text
    assert "builtins.KeyError" in text and "builtins.ValueError" in text
    assert "_raised" in text  # the frames are there


def test_json_and_text_formatters_never_print_messages() -> None:
    exc = _raised()
    entry = json.loads(_JsonFormatter().format(_record(exc)))
    assert entry["error"] == "ValueError"
    assert SECRET not in json.dumps(entry)
    text = _NoMessageTracebacks("%(message)s").format(_record(exc))
    assert SECRET not in text and "Traceback" in text
