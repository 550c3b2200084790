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
    client: str | None = None
    user_agent: str | None = None


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
        "id-0",
        "id-1",
        "id-2",
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


class _Key:
    display_prefix = "kg_live_a1B2c3D4"
    org = 'acme "inc" \\ ünïcode\n'


def test_json_line_is_one_valid_object_whatever_the_values() -> None:
    stream = io.StringIO()
    log = AccessLog(stream=stream, flush_interval=0.0)
    exchange = _Exchange(
        "req-1",
        "PROPFIND",
        "/a/%22b%22",
        'route "with" quotes\\',
        _Key(),
        "2001:db8::7",
        'curl/8 "x"\n',
    )
    log.write(exchange, 207, "allowed", 0.0012345)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record == {
        "time": record["time"],
        "request_id": "req-1",
        "method": "PROPFIND",
        "path": "/a/%22b%22",
        "route": 'route "with" quotes\\',
        "status": 207,
        "outcome": "allowed",
        "duration_ms": 1.234,
        "key": "kg_live_a1B2c3D4",
        "org": 'acme "inc" \\ ünïcode\n',
        "client": "2001:db8::7",
        "user_agent": 'curl/8 "x"\n',
    }
    assert record["time"].endswith("Z") and len(record["time"]) == len("2026-01-01T00:00:00.000Z")
    anonymous = io.StringIO()
    AccessLog(stream=anonymous).write(_Exchange("req-2"), 401, "missing_api_key", 0.0)
    record = json.loads(anonymous.getvalue())
    assert record["key"] is None and record["org"] is None
    assert record["client"] is None and record["user_agent"] is None


def test_user_agent_is_redacted_and_bounded() -> None:
    stream = io.StringIO()
    log = AccessLog(stream=stream, redact=lambda text: text.replace("SECRET", "[redacted]"))
    log.write(_Exchange("req-4", user_agent="bot SECRET " + "x" * 1000), 200, "allowed", 0.0)
    agent = json.loads(stream.getvalue())["user_agent"]
    assert "SECRET" not in agent and agent.startswith("bot [redacted] ")
    assert len(agent) <= 256 + len("[redacted]")


def test_text_line_has_every_field() -> None:
    stream = io.StringIO()
    AccessLog(stream=stream, fmt="text").write(_Exchange("req-3"), 404, "no_route", 0.5)
    assert stream.getvalue().endswith(
        "request_id=req-3 method=GET path=/x route=r status=404 outcome=no_route "
        "duration_ms=500.0 key=- org=- client=- user_agent=-\n"
    )


def test_admin_lines_are_named_fields_after_the_time() -> None:
    fields: dict[str, str | int | float | None] = {
        "listener": "admin",
        "request_id": "adm-1",
        "operation": "listOrgs",
        "status": 401,
        "principal": None,
        "user_agent": 'curl/8 "x"',
        "duration_ms": 1.5,
    }
    stream = io.StringIO()
    AccessLog(stream=stream).write_fields(fields)
    record = json.loads(stream.getvalue())
    assert list(record) == ["time", *fields]
    assert record == {"time": record["time"], **fields}
    assert record["time"].endswith("Z")

    text = io.StringIO()
    AccessLog(stream=text, fmt="text").write_fields(fields)
    line = text.getvalue()
    assert line.startswith("time=") and line.endswith("\n") and line.count("\n") == 1
    assert line.split(" ", 1)[1] == (
        "listener=admin request_id=adm-1 operation=listOrgs status=401 principal=- "
        'user_agent="curl/8 \\"x\\"" duration_ms=1.5\n'
    )


def test_admin_lines_are_batched_and_switched_off_with_the_log() -> None:
    stream = _CountingStream()
    log = AccessLog(stream=stream, flush_interval=1.0)
    log.write_fields({"request_id": "a"})
    log.write(_Exchange("b"), 200, "allowed", 0.0)
    assert stream.writes == 0
    log.flush()
    assert [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == ["a", "b"]
    off = io.StringIO()
    AccessLog(enabled=False, stream=off).write_fields({"request_id": "c"})
    assert off.getvalue() == ""
