"""The access log's batching: lines leave together, at the interval, when many wait, at exit."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from gateway.observability.access_log import MAX_PENDING, AccessLog


@dataclass
class _Exchange:
    request_id: str
    method: str = "GET"
    path: str = "/x"
    route: str = "r"
    key: object = None


class _CountingStream(io.StringIO):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_batched_lines_wait_for_a_flush_and_leave_in_one_write() -> None:
    stream = _CountingStream()
    log = AccessLog(stream=stream, flush_interval=1.0)
    for i in range(3):
        log.write(_Exchange(f"id-{i}"), 200, "allowed", 0.001)
    assert stream.getvalue() == ""
    log.flush()
    assert stream.writes == 1
    assert [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == [
        "id-0", "id-1", "id-2"
    ]
    log.flush()  # nothing pending: no write
    assert stream.writes == 1


def test_a_burst_is_written_once_max_pending_lines_wait() -> None:
    stream = _CountingStream()
    log = AccessLog(stream=stream, flush_interval=60.0)
    for i in range(MAX_PENDING):
        log.write(_Exchange(f"id-{i}"), 200, "allowed", 0.001)
    assert stream.writes == 1
    assert len(stream.getvalue().splitlines()) == MAX_PENDING


def test_interval_zero_writes_every_line_at_once() -> None:
    stream = _CountingStream()
    log = AccessLog(stream=stream, flush_interval=0.0)
    log.write(_Exchange("a"), 404, "no_route", 0.0)
    assert json.loads(stream.getvalue())["outcome"] == "no_route"
