"""Hostile request lines and headers against a real gateway, in both log formats.

A client controls the path, method, user agent and request id of what it sends to either
listener. Whatever it sends, each request is one access-log line of the configured
format (JSON that parses; text with no control character, no byte that is not ASCII, so
an ANSI escape never reaches an operator's terminal and a bad byte never costs the batch
of lines it was written with), and the admin metrics keep a bounded label set that
`promtool check metrics` accepts.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics

from gateway.admin.telemetry import operation_ids
from tests.integration.observability.test_metrics import promtool_check
from tests.support.configs import gateway_env, operator_config
from tests.support.credentials import ROOT_TOKEN
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.metrics import parse_metrics
from tests.support.stores import Stores

# What a client puts where an operator will read it. (Raw control bytes in a header are
# refused by the HTTP parser before anything is logged; bytes that are not UTF-8 are not.)
AGENTS = [b'curl/8 \xff\xfe\xc3( \xe2\x80\xa8 "quoted" key=value\\', b"curl/8\xff\xc3("]
PATHS = [
    b"/admin/v1/orgs/%1b%5b2J%0a%0dtime=forged%20status=200",
    b"/admin/v1/orgs/%ff%fe/keys",
    b"/admin/v1/orgs/%1b%5b31mred%1b%5b0m%07/keys",
    b"/admin/v1/" + b"z" * 6000,
    b"/public/%1b%5b2J",
    b"/api/read/%E2%80%A8line",
]


def _send(
    port: int, method: bytes, target: bytes, request_id: str, *, auth: bool, agent: bytes = b"t"
) -> None:
    head = (
        method + b" " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"User-Agent: " + agent + b"\r\nX-Request-Id: " + request_id.encode() + b"\r\n"
    )
    if auth:
        head += b"Authorization: Bearer " + ROOT_TOKEN.encode() + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + b"\r\n")
        while conn.recv(65536):
            pass


def _hostile_traffic(gw: GatewayProcess) -> list[str]:
    """Send every hostile request to both listeners; the request ids that must be logged."""
    sent = []
    for i, target in enumerate(PATHS):
        for method in (b"GET", b"DELETE", b"PATCH"):
            for port, where in ((gw.admin_port, "admin"), (gw.proxy_port, "proxy")):
                if where == "admin" and not target.startswith(b"/admin/"):
                    continue  # only the admin API writes access lines on that listener
                for a, agent in enumerate(AGENTS):
                    rid = f"hostile-{where}-{method.decode()}-{i}-{a}"
                    _send(port, method, target, rid, auth=where == "admin", agent=agent)
                    sent.append(rid)
    # Paths that match no admin operation, each different: one `none` series, not many.
    for i in range(50):
        _send(gw.admin_port, b"PUT", f"/admin/v1/random-{i}/{i * 7}".encode(), f"r{i}", auth=True)
    return sent


@pytest.fixture(scope="module", params=["json", "text"])
def hostile_gateway(
    request: pytest.FixtureRequest,
    stores: Stores,
    echo_upstream: UpstreamProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, GatewayProcess, list[str]]]:
    fmt = request.param
    log = {"level": "info", "format": fmt, "access_log": True, "access_log_flush": "0s"}
    config = operator_config(echo_upstream.url, closed_port(), log=log)
    log_dir = tmp_path_factory.mktemp(f"hostile-{fmt}")
    gw = start_gateway(config, log_dir, gateway_env(stores), name=f"hostile-{fmt}")
    with stopped_cleanly(gw):
        sent = _hostile_traffic(gw)
        yield fmt, gw, sent


def _stdout_lines(gw: GatewayProcess) -> list[bytes]:
    return Path(gw.process.stdout_path).read_bytes().splitlines()


def test_each_hostile_request_is_one_clean_log_line(
    hostile_gateway: tuple[str, GatewayProcess, list[str]],
) -> None:
    fmt, gw, sent = hostile_gateway
    lines = _stdout_lines(gw)
    for line in lines:
        # Printable ASCII only: no escape sequence, no forged line, no undecodable byte.
        assert all(0x20 <= byte < 0x7F for byte in line), line
        if fmt == "json":
            json.loads(line)
        else:
            assert line.startswith(b"time="), line
    for rid in sent:
        marker = f"request_id={rid} " if fmt == "text" else f'"request_id":"{rid}"'
        found = [line for line in lines if marker.encode() in line]
        assert len(found) == 1, (rid, found)
        assert b" time=forged" not in found[0], found[0]


def test_admin_metrics_stay_bounded_and_lint_clean(
    hostile_gateway: tuple[str, GatewayProcess, list[str]],
) -> None:
    _fmt, gw, _sent = hostile_gateway
    known = set(operation_ids("").values()) | {"none"}
    for accept in ("text/plain", "application/openmetrics-text; version=1.0.0"):
        scrape = urllib.request.Request(gw.admin_url + "/metrics", headers={"Accept": accept})
        with urllib.request.urlopen(scrape, timeout=10) as reply:
            text = reply.read().decode()
        if accept != "text/plain":  # promtool lints the Prometheus text format only
            assert text.endswith("# EOF\n")
            assert list(openmetrics(text))  # type: ignore[no-untyped-call]  # raises if malformed
            continue
        promtool_check(text)
        series = [
            dict(labels)
            for name, labels in parse_metrics(text)
            if name == "keygate_admin_requests_total"
        ]
        assert {s["operation"] for s in series} <= known, series
        assert {s["code"] for s in series} <= {"200", "201", "204", "400", "401", "404", "405"}
        assert len(series) < 20, series
