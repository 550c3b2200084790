"""SPEC §4 through a real `keygate serve`: what the upstream receives and what comes back.

Every assertion about forwarding is made on the echo upstream's report of the request it
actually received (method, raw target, headers in order with repeats, body digest).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
import time

import aiohttp
import pytest

from tests.integration.proxy.harness import Stack, raw_error
from tests.integration.proxy.wire import (
    bearer,
    close_writer,
    raw_request,
    read_body,
    read_head,
    read_response,
    request_bytes,
    upstream_header,
)
from tests.support.errors import get_error
from tests.support.gateway_process import GatewayProcess, UpstreamProcess
from tests.support.keys import KeyMaker, MadeKey


@pytest.fixture
async def reader_key(keys: KeyMaker) -> MadeKey:
    return await keys.key(["read", "write"])


# --- path normalisation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        ("/api/read/x/../y", "/api/read/y"),
        ("/api/read/./x/./y", "/api/read/x/y"),
        ("/api/read/x/%2e%2e/y", "/api/read/y"),
        ("/api/read/x/%2E%2E/y", "/api/read/y"),
        ("/api/read/x/.%2e/y", "/api/read/y"),
        ("/api/read//x///y", "/api/read/x/y"),
        ("/api/read/%7Euser/%41bc", "/api/read/~user/Abc"),
        ("/api/read/a%3Bb/c%20d", "/api/read/a%3Bb/c%20d"),
        ("/api/read/caf%c3%a9", "/api/read/caf%C3%A9"),
        ("/api/read/x/", "/api/read/x/"),
        ("/api/write/../read/z", "/api/read/z"),
    ],
)
async def test_upstream_receives_the_normalised_path(
    gateway: GatewayProcess, reader_key: MadeKey, sent: str, forwarded: str
) -> None:
    reply = await raw_request(gateway.proxy_port, "GET", sent + "?q=1", [bearer(reader_key.secret)])
    assert reply.status == 200, reply.body
    report = reply.json()
    assert report["path"] == forwarded
    assert report["query"] == "q=1"


async def test_route_is_chosen_by_the_normalised_path(
    gateway: GatewayProcess, keys: KeyMaker
) -> None:
    """A read-only key cannot reach a write route by dressing the path up."""
    key = await keys.key(["read"])
    # Normalises to /api/write/x: the write route (POST only), which this key may not use.
    reply = await raw_request(
        gateway.proxy_port,
        "POST",
        "/api/read/../write/x",
        [bearer(key.secret), ("Content-Length", "0")],
    )
    raw_error(reply, 403, "insufficient_scope")
    reply = await raw_request(
        gateway.proxy_port,
        "POST",
        "/api/read/%2e%2e/write/x",
        [bearer(key.secret), ("Content-Length", "0")],
    )
    raw_error(reply, 403, "insufficient_scope")


@pytest.mark.parametrize(
    "path",
    [
        "/api/read/a%2Fb",
        "/api/read/a%2fb",
        "/api/read/a%5Cb",
        "/api/read/a\\b",
        "/api/read/a%00b",
        "/api/read/a%0Ab",
        "/api/read/a%7Fb",
        "/api/../../x",
        "/api/read/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..",
        "/api/read/%C0%AE%C0%AE/x",
        "/api/read/%zz",
        "/api/read/..;/x",
    ],
)
async def test_unsafe_paths_are_400_invalid_path(
    gateway: GatewayProcess, reader_key: MadeKey, path: str
) -> None:
    reply = await raw_request(gateway.proxy_port, "GET", path, [bearer(reader_key.secret)])
    error = raw_error(reply, 400, "invalid_path")
    assert path not in error["message"]


async def test_invalid_path_is_refused_before_authentication(gateway: GatewayProcess) -> None:
    reply = await raw_request(gateway.proxy_port, "GET", "/api/read/a%2Fb")
    raw_error(reply, 400, "invalid_path")


async def test_query_string_is_passed_verbatim(
    gateway: GatewayProcess, reader_key: MadeKey
) -> None:
    query = "a=1&b=%20x+y&c&d=%2F%3F&e=caf%C3%A9&a=2"
    reply = await raw_request(
        gateway.proxy_port, "GET", f"/api/read/q?{query}", [bearer(reader_key.secret)]
    )
    assert reply.status == 200
    assert reply.json()["query"] == query


async def test_absolute_form_target_is_forwarded_in_origin_form(
    gateway: GatewayProcess, reader_key: MadeKey
) -> None:
    reply = await raw_request(
        gateway.proxy_port,
        "GET",
        "http://api.example.test/api/read/abs/../x?y=1",
        [("Host", "api.example.test"), bearer(reader_key.secret)],
    )
    assert reply.status == 200, reply.body
    report = reply.json()
    assert report["path"] == "/api/read/x"
    assert report["query"] == "y=1"


async def test_head_is_allowed_on_a_get_route(gateway: GatewayProcess, reader_key: MadeKey) -> None:
    reply = await raw_request(
        gateway.proxy_port, "HEAD", "/api/read/h", [bearer(reader_key.secret)]
    )
    assert reply.status == 200
    assert reply.body == b""
    # Nothing else sneaks onto a GET-only route.
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        reply = await raw_request(
            gateway.proxy_port,
            method,
            "/api/read/h",
            [bearer(reader_key.secret), ("Content-Length", "0")],
        )
        raw_error(reply, 404, "no_route")


# --- headers ------------------------------------------------------------------------------


async def test_request_headers_upstream(gateway: GatewayProcess, keys: KeyMaker) -> None:
    key = await keys.key(["read", "write", "extra:thing"])
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    sent = [
        bearer(key.secret),
        ("Host", "public.example.test"),
        ("X-Keygate-Org", "someone-else"),
        ("X-Keygate-Key-Id", "kg_live_spoofed1"),
        ("x-keygate-scopes", "*"),
        ("X-Keygate-Anything", "1"),
        ("Connection", "keep-alive, X-Drop-Me"),
        ("X-Drop-Me", "hop-by-hop because Connection names it"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA=="),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("X-Forwarded-For", "203.0.113.7, 198.51.100.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "spoofed.example"),
        ("traceparent", traceparent),
        ("tracestate", "vendor=1"),
        ("X-Request-Id", "client-req.42_A"),
        ("X-End-To-End", "kept"),
        ("Accept-Encoding", "gzip"),
        ("Cookie", "a=1"),
    ]
    reply = await raw_request(gateway.proxy_port, "GET", "/api/read/headers", sent)
    assert reply.status == 200, reply.body
    report = reply.json()
    names = {k.lower() for k, _ in report["headers"]}

    def got(name: str) -> list[str]:
        return upstream_header(report, name)

    # Identity, from the key, never from the client.
    assert got("X-Keygate-Org") == [key.org]
    assert got("X-Keygate-Key-Id") == [key.display_prefix]
    assert sorted(got("X-Keygate-Scopes")[0].split(" ")) == sorted(key.scopes)
    assert len(got("X-Keygate-Scopes")) == 1
    assert got("X-Keygate-Env") == ["live"]
    assert "x-keygate-anything" not in names
    # The credential is not forwarded on an ordinary route.
    assert "authorization" not in names and "x-api-key" not in names
    assert key.secret not in reply.body.decode()
    # Hop-by-hop, including the one named in Connection, and Proxy-Authorization.
    for hop in (
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
    ):
        assert hop not in names, hop
    assert all("x-drop-me" not in v.lower() for v in got("Connection"))
    # Forwarding information: the peer is not a trusted proxy, so the chain it sent is
    # dropped and the gateway vouches for the peer alone.
    assert got("X-Forwarded-For") == ["127.0.0.1"]
    assert got("X-Real-IP") == ["127.0.0.1"]
    assert got("X-Forwarded-Proto") == ["http"]
    assert got("X-Forwarded-Host") == ["public.example.test"]
    assert got("traceparent") == [traceparent]
    assert got("tracestate") == ["vendor=1"]
    assert got("X-Request-Id") == ["client-req.42_A"]
    assert reply.header("X-Request-Id") == "client-req.42_A"
    # End-to-end headers pass.
    assert got("X-End-To-End") == ["kept"]
    assert got("Accept-Encoding") == ["gzip"]
    assert got("Cookie") == ["a=1"]


async def test_the_gateway_adds_no_headers_of_its_own_http_client(
    gateway: GatewayProcess, reader_key: MadeKey
) -> None:
    # An HTTP client library would add Accept, Accept-Encoding, User-Agent and, for a
    # body, Content-Type; a proxy must send only what its client sent (plus §4's own).
    body = b"raw bytes, no content type"
    reply = await raw_request(
        gateway.proxy_port,
        "POST",
        "/api/write/x",
        [bearer(reader_key.secret), ("Content-Length", str(len(body)))],
        body,
    )
    assert reply.status == 200, reply.body
    names = {k.lower() for k, _ in reply.json()["headers"]}
    for added in ("accept", "accept-encoding", "user-agent", "content-type"):
        assert added not in names, added
    assert reply.json()["method"] == "POST"


async def test_x_api_key_is_stripped_too(gateway: GatewayProcess, reader_key: MadeKey) -> None:
    reply = await raw_request(
        gateway.proxy_port, "GET", "/api/read/x", [("X-API-Key", reader_key.secret)]
    )
    assert reply.status == 200
    assert not upstream_header(reply.json(), "X-API-Key")


async def test_header_rules_ignore_the_case_of_names(
    gateway: GatewayProcess, reader_key: MadeKey
) -> None:
    # Field names are case-insensitive (RFC 9110 §5.1): what is dropped or replaced in one
    # spelling is dropped or replaced in every spelling.
    sent = [
        ("x-api-key", reader_key.secret),
        ("connection", "keep-alive, x-DROP-me"),
        ("X-Drop-Me", "named in Connection in another case"),
        ("PROXY-CONNECTION", "keep-alive"),
        ("proxy-authorization", "Basic c2VjcmV0OnNlY3JldA=="),
        ("x-request-id", "client-lower.1"),
        ("X-FORWARDED-HOST", "spoofed.example"),
        ("x-forwarded-proto", "https"),
        ("X-KEYGATE-ORG", "someone-else"),
    ]
    reply = await raw_request(gateway.proxy_port, "GET", "/api/read/x", sent)
    assert reply.status == 200, reply.body
    report = reply.json()
    names = [k.lower() for k, _ in report["headers"]]
    for dropped in ("x-api-key", "x-drop-me", "proxy-connection", "proxy-authorization"):
        assert dropped not in names, dropped
    assert upstream_header(report, "X-Request-Id") == ["client-lower.1"]
    assert upstream_header(report, "X-Forwarded-Proto") == ["http"]
    assert len(upstream_header(report, "X-Forwarded-Host")) == 1
    assert "spoofed.example" not in upstream_header(report, "X-Forwarded-Host")
    assert len(upstream_header(report, "X-Keygate-Org")) == 1
    assert "someone-else" not in upstream_header(report, "X-Keygate-Org")
    assert reader_key.secret not in reply.body.decode()


async def test_forward_credentials_route_keeps_the_credential(
    gateway: GatewayProcess, reader_key: MadeKey
) -> None:
    for header in (bearer(reader_key.secret), ("X-API-Key", reader_key.secret)):
        reply = await raw_request(gateway.proxy_port, "GET", "/api/creds/x", [header])
        assert reply.status == 200
        report = reply.json()
        assert upstream_header(report, header[0]) == [header[1]]
        assert upstream_header(report, "X-Keygate-Key-Id") == [reader_key.display_prefix]


@pytest.mark.parametrize(
    "client_id",
    ["", "has space", "x" * 129, "semi;colon", "ünïcode", "a/b"],
)
async def test_invalid_request_id_is_replaced(
    gateway: GatewayProcess, reader_key: MadeKey, client_id: str
) -> None:
    headers = [bearer(reader_key.secret), ("X-Request-Id", client_id)]
    reply = await raw_request(gateway.proxy_port, "GET", "/api/read/rid", headers)
    assert reply.status == 200
    forwarded = upstream_header(reply.json(), "X-Request-Id")
    assert len(forwarded) == 1 and forwarded[0] != client_id
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", forwarded[0])
    assert reply.header("X-Request-Id") == forwarded[0]


async def test_request_id_on_refusals_and_max_length_kept(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    rid = "R" * 128
    error, reply = await get_error(
        http, gateway.url + "/api/read/x", 401, "missing_api_key", headers={"X-Request-Id": rid}
    )
    assert error["request_id"] == rid == reply.headers["X-Request-Id"]
    error, reply = await get_error(http, gateway.url + "/nope", 404, "no_route")
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", error["request_id"])


async def test_hop_by_hop_response_headers_are_dropped(
    stack: Stack, gateway: GatewayProcess, http: aiohttp.ClientSession, reader_key: MadeKey
) -> None:
    async with http.get(gateway.url + "/probe/hop", headers=reader_key.auth) as reply:
        assert reply.status == 200
        assert await reply.text() == "hop"
        headers = reply.headers
    assert headers["X-Probe-End"] == "kept"
    for hop in ("X-Probe-Hop", "Keep-Alive", "Proxy-Authenticate"):
        assert hop not in headers, hop
    assert "X-Probe-Hop" not in headers.get("Connection", "")
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", headers["X-Request-Id"])
    assert "aiohttp" not in headers.get("Server", "")


# --- bodies -----------------------------------------------------------------------------


async def test_redirect_is_passed_back_not_followed(
    gateway: GatewayProcess, http: aiohttp.ClientSession, reader_key: MadeKey
) -> None:
    async with http.get(
        gateway.url + "/_demo/redirect", headers=reader_key.auth, allow_redirects=False
    ) as reply:
        assert reply.status == 302
        assert reply.headers["Location"] == "/elsewhere"


async def test_gzip_body_passes_byte_for_byte(
    gateway: GatewayProcess, echo_upstream: UpstreamProcess, reader_key: MadeKey
) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as direct:
        async with direct.get(echo_upstream.url + "/_demo/gzip") as r:
            expected = await r.read()  # what the upstream itself sends
        async with direct.get(gateway.url + "/_demo/gzip", headers=reader_key.auth) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Encoding"] == "gzip"
            body = await reply.read()
    assert body == expected
    assert gzip.decompress(body) == b"compressed hello " * 100


async def test_body_is_forwarded(
    gateway: GatewayProcess, reader_key: MadeKey, http: aiohttp.ClientSession
) -> None:
    body = b'{"hello": "world"}' * 50
    async with http.post(
        gateway.url + "/api/write/b",
        data=body,
        headers={**reader_key.auth, "Content-Type": "application/json"},
    ) as r:
        assert r.status == 200
        report = await r.json()
    assert report["method"] == "POST"
    assert report["body_size"] == len(body)
    assert report["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert upstream_header(report, "Content-Type") == ["application/json"]


async def test_max_body_by_content_length_is_413(
    gateway: GatewayProcess, reader_key: MadeKey
) -> None:
    reply = await raw_request(
        gateway.proxy_port,
        "POST",
        "/api/small/x",
        [bearer(reader_key.secret), ("Content-Length", "1025")],
        b"x" * 1025,
    )
    raw_error(reply, 413, "body_too_large")
    ok = await raw_request(
        gateway.proxy_port,
        "POST",
        "/api/small/x",
        [bearer(reader_key.secret), ("Content-Length", "1024")],
        b"x" * 1024,
    )
    assert ok.status == 200
    assert ok.json()["body_size"] == 1024


async def test_max_body_by_chunked_stream_is_413(
    gateway: GatewayProcess, reader_key: MadeKey
) -> None:
    def chunked(total: int, size: int = 300) -> bytes:
        out = b""
        for start in range(0, total, size):
            piece = b"y" * min(size, total - start)
            out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        return out + b"0\r\n\r\n"

    headers = [bearer(reader_key.secret), ("Transfer-Encoding", "chunked")]
    reply = await raw_request(gateway.proxy_port, "POST", "/api/small/x", headers, chunked(5000))
    raw_error(reply, 413, "body_too_large")
    ok = await raw_request(gateway.proxy_port, "POST", "/api/small/x", headers, chunked(1000))
    assert ok.status == 200
    assert ok.json()["body_size"] == 1000


# --- Expect: 100-continue -----------------------------------------------------------------


async def _expect_continue(port: int, secret: str) -> tuple[int, list[int], bytes]:
    """Send headers with Expect: 100-continue, wait for an answer before any body."""
    body = b"z" * 2000
    head = request_bytes(
        "POST",
        "/api/any/upload",
        [
            ("Authorization", f"Bearer {secret}"),
            ("Content-Length", str(len(body))),
            ("Expect", "100-continue"),
        ],
        port=port,
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    interim: list[int] = []
    try:
        writer.write(head)
        await writer.drain()
        first = await asyncio.wait_for(read_head(reader), 5)
        if first.status == 100:
            interim.append(100)
            writer.write(body)
            await writer.drain()
            final = await asyncio.wait_for(read_response(reader, skip_interim=False), 5)
        else:
            final = first
            final.body = await read_body(reader, first)
        return final.status, interim, final.body
    finally:
        await close_writer(writer)


async def test_expect_continue_bad_key_gets_401_without_100(
    gateway: GatewayProcess, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    for secret in ("kg_live_garbage", key.with_secret("A" * 32)):
        status, interim, body = await _expect_continue(gateway.proxy_port, secret)
        assert interim == []
        assert status == 401, body


async def test_expect_continue_good_key_gets_100_then_200(
    gateway: GatewayProcess, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    status, interim, body = await _expect_continue(gateway.proxy_port, key.secret)
    assert interim == [100]
    assert status == 200
    report = json.loads(body)
    assert report["body_size"] == 2000
    assert not upstream_header(report, "Expect")


# --- upstream failures ----------------------------------------------------------------------


async def test_upstream_refused_is_502(
    gateway: GatewayProcess, http: aiohttp.ClientSession, reader_key: MadeKey
) -> None:
    await get_error(
        http, gateway.url + "/dead/x", 502, "upstream_unavailable", headers=reader_key.auth
    )


async def test_upstream_slow_is_504(
    gateway: GatewayProcess, http: aiohttp.ClientSession, reader_key: MadeKey
) -> None:
    started = time.monotonic()
    await get_error(
        http,
        gateway.url + "/_demo/slow?seconds=3",
        504,
        "upstream_timeout",
        headers=reader_key.auth,
    )
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5, elapsed  # the route's upstream timeout is 1 s
    # Faster than the timeout is fine on the same route.
    async with http.get(gateway.url + "/_demo/slow?seconds=0.1", headers=reader_key.auth) as r:
        assert r.status == 200


async def test_client_gone_during_slow_upstream_cancels_it(
    stack: Stack, gateway: GatewayProcess, http: aiohttp.ClientSession, reader_key: MadeKey
) -> None:
    probe = stack.probe
    probe.slow_started.clear()
    probe.slow_cancelled.clear()
    _, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(
        request_bytes("GET", "/probe/slow", [bearer(reader_key.secret)], port=gateway.proxy_port)
    )
    await writer.drain()
    assert await asyncio.to_thread(probe.slow_started.wait, 5), "upstream never called"
    await close_writer(writer)
    assert await asyncio.to_thread(probe.slow_cancelled.wait, 5), (
        "the upstream request was not cancelled when the client went away"
    )
    async with http.get(gateway.url + "/api/read/after", headers=reader_key.auth) as reply:
        assert reply.status == 200
    assert gateway.healthy()
