"""`keygate routes list|test` through the real command, and `routes test` checked against
a running gateway: for each request line, the CLI's answer is what the proxy does."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CliResult, subprocess_env
from tests.support.configs import gateway_config, gateway_env
from tests.support.gateway_process import (
    REPO_ROOT,
    GatewayProcess,
    UpstreamProcess,
    start_gateway,
    stopped_cleanly,
    write_config,
)
from tests.support.http1 import take_response_head
from tests.support.stores import Stores

ROUTES: list[dict[str, Any]] = [
    {"path": "/api/v1/sessions/**", "methods": ["GET"], "upstream": "demo", "scopes": ["read"]},
    {
        "path": "/api/v1/sessions/**",
        "methods": ["POST", "DELETE"],
        "upstream": "demo",
        "scopes": ["manage"],
        "max_body": "1MiB",
        "name": "sessions-write",
    },
    {"path": "/api/v1/orgs/{org}/**", "upstream": "demo", "scopes": ["read"], "org_param": "org"},
    {"path": "/health", "upstream": "demo", "public": True, "name": "health"},
]


def _config(upstream: str) -> dict[str, Any]:
    return gateway_config({"demo": {"url": upstream}}, ROUTES)


@pytest.fixture
def config_file(tmp_path: Path, echo_upstream: UpstreamProcess) -> Path:
    listen = {"listen": {"proxy": "127.0.0.1:1", "admin": "127.0.0.1:2"}}
    return write_config(tmp_path / "routes.yaml", {**listen, **_config(echo_upstream.url)})


def routes(config: Path, *args: str) -> CliResult:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "routes", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env({}),
        cwd=REPO_ROOT,
        timeout=60,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def test_routes_list(config_file: Path, echo_upstream: UpstreamProcess) -> None:
    listed = routes(config_file, "list", "--json")
    assert listed.code == 0, listed.err
    items = listed.json()["items"]
    assert [(r["index"], r["path"], r["methods"]) for r in items] == [
        (0, "/api/v1/sessions/**", ["GET"]),
        (1, "/api/v1/sessions/**", ["DELETE", "POST"]),
        (2, "/api/v1/orgs/{org}/**", None),
        (3, "/health", None),
    ]
    assert items[1]["name"] == "sessions-write" and items[1]["max_body"] == 1024 * 1024
    assert items[3]["public"] is True and items[2]["org_param"] == "org"
    assert {r["upstream_url"] for r in items} == {echo_upstream.url}

    table = routes(config_file, "list").out.splitlines()
    assert table[0].split() == ["#", "NAME", "METHODS", "PATH", "UPSTREAM", "ACCESS"]
    assert len(table) == 1 + 4
    assert "public (no key)" in table[4] and "key with scopes: manage" in table[2]


def test_routes_test_names_route_upstream_scopes_and_params(config_file: Path) -> None:
    found = routes(config_file, "test", "POST", "/api/v1/sessions/./42/../7?x=1", "--json")
    assert found.code == 0, found.err
    data = found.json()
    assert (data["method"], data["path"], data["matched"]) == ("POST", "/api/v1/sessions/7", True)
    assert data["route"]["name"] == "sessions-write" and data["route"]["scopes"] == ["manage"]
    assert data["route"]["upstream"] == "demo" and data["route"]["public"] is False

    org = routes(config_file, "test", "GET", "/api/v1/orgs/ac%6De/keys")
    assert org.code == 0, org.err
    shown = dict(line.split(None, 1) for line in org.out.strip().splitlines())
    assert shown["params"] == "org=acme"
    assert shown["access"] == "key with scopes: read, org {org} must be the key's"
    assert shown["path"] == "/api/v1/orgs/acme/keys (normalised from /api/v1/orgs/ac%6De/keys)"
    assert shown["upstream"].startswith("demo (http://127.0.0.1:")

    public = routes(config_file, "test", "GET", "/health")
    assert public.code == 0 and "public (no key)" in public.out

    refused = routes(config_file, "test", "PUT", "/api/v1/sessions/1")
    assert (refused.code, refused.out) == (1, "")
    assert refused.err == (
        "keygate: error: the proxy refuses PUT with 404 no_route: "
        "No route matches this method and path.\n"
    )


def test_routes_test_reads_the_request_line_as_the_proxy_does(config_file: Path) -> None:
    lower = routes(config_file, "test", "get", "/health")
    assert (lower.code, lower.out) == (1, "")
    assert lower.err == (
        "keygate: error: the proxy refuses get with 400 invalid_request: "
        "The request is not valid HTTP/1.1. (methods are case-sensitive: GET?)\n"
    )
    # A target that would be a second request line (or a header) is one bad request.
    for target in ("/health\r\nX-Api-Key: x", "/health HTTP/1.0", "/health\x1b[2J"):
        smuggled = routes(config_file, "test", "GET", target, "--json")
        assert smuggled.code == 1 and "Traceback" not in smuggled.err
        assert (smuggled.json()["status"], smuggled.json()["code"]) == (400, "invalid_request")
    long = routes(config_file, "test", "GET", "/" + "x" * 9000, "--json").json()
    assert (long["status"], long["code"]) == (431, "headers_too_large")


# (method, target): what `routes test` says must be what the proxy does.
REQUESTS = [
    ("GET", "/api/v1/sessions/42"),
    ("POST", "/api/v1/sessions/42"),
    ("PATCH", "/api/v1/sessions/42"),
    ("GET", "/api/v1/sessions/%2e%2e/%2e%2e/health"),
    ("GET", "/api/v1/../../x"),
    ("GET", "/api/v1/sessions%2F42"),
    ("GET", "/api/v1/orgs/acme/x"),
    ("GET", "/health"),
    ("GET", "/health/"),
    ("GET", "//health"),
    ("GET", "/health#frag"),
    ("GET", "/nowhere"),
    ("GET", "http://example.test/health"),
    # Request lines the HTTP parser refuses before any route is looked at.
    ("get", "/health"),
    ("Get", "/api/v1/sessions/42"),
    ("FOO", "/health"),
    ("GET", "*"),
    ("PRI", "*"),
    ("GET", "?x"),
    ("GET", "http:/health"),
    ("GET", "/h\u00e9alth"),
    ("GET", "/health/" + "x" * 9000),
    # ...and the ones it lets through to the proxy's own checks.
    ("OPTIONS", "*"),
    ("CONNECT", "/health"),
    ("CONNECT", "example.test:443"),
    ("HEAD", "/health"),
    ("GET", "/h%65alth"),
    ("GET", "/health%00"),
    ("GET", "/health%"),
    ("GET", "/health;x"),
    ("GET", "/..;/health"),
    ("GET", "/health/.."),
    ("GET", "/api/v1/sessions/%2f1"),
    ("GET", "/health?#"),
    ("GET", "/" + "a/" * 3000),
    ("GET", "HTTP://EXAMPLE.TEST/health"),
    ("GET", "ftp://example.test/health"),
]


def _raw(gw: GatewayProcess, method: str, target: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10) as conn:
        conn.sendall(f"{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    parsed = take_response_head(data)
    assert parsed is not None, data
    head, used = parsed
    return head.status, data[used:]


@pytest.fixture
def gateway(
    tmp_path: Path, clean_stores: Stores, echo_upstream: UpstreamProcess
) -> Iterator[GatewayProcess]:
    gw = start_gateway(_config(echo_upstream.url), tmp_path, gateway_env(clean_stores))
    with stopped_cleanly(gw):
        yield gw


def test_routes_test_answers_what_the_proxy_does(gateway: GatewayProcess) -> None:
    for method, target in REQUESTS:
        said = routes(gateway.config_path, "test", method, target, "--json")
        status, body = _raw(gateway, method, target)
        answer = said.json()
        if answer["matched"]:
            assert said.code == 0
            # No key was sent: a public route reaches the upstream, any other asks for one.
            expected = 200 if answer["route"]["public"] else 401
            assert status == expected, (method, target, answer, status, body)
        else:
            assert said.code == 1
            assert status == answer["status"], (method, target, answer, status, body)
            assert answer["code"].encode() in body, (method, target, body)
