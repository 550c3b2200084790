"""What each check API adds to the shared decision (SPEC §12): Envoy's headers to remove,
gRPC statuses, the nginx error body, one rate-limit budget with the proxy, last-used
stamps, metrics and the access log; and input a proxy in front would never send."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import grpc
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as pb
from google.rpc import code_pb2

from tests.integration.check.askers import CHECK_APIS, Asker, grpc_answer
from tests.integration.user_tokens.support import access_line
from tests.support.gateway_process import GatewayProcess
from tests.support.keys import ACTOR, KeyMaker
from tests.support.metrics import labels, moved, scrape

FORGED = {
    "X-Keygate-Org": "evil",
    "x_keygate_scopes": "admin",
    "X.Keygate.Subject": "mallory",
    "X-Keygate-Anything": "1",
}


async def test_envoy_is_told_to_remove_every_forged_spelling(keys: KeyMaker, asker: Asker) -> None:
    key = await keys.key(["read"])
    for api in ("envoy", "envoy_grpc"):
        answer = await asker.ask(api, "GET", "/api/read/x", {**key.auth, **FORGED})
        assert answer.status == 200
        assert answer.identity["x-keygate-org"] == key.org
        # The names Keygate sets are overwritten, not removed (removing after setting
        # would drop Keygate's own); every other spelling is removed.
        assert sorted(answer.to_remove) == [
            "x-keygate-anything",
            "x.keygate.subject",
            "x_keygate_scopes",
        ], api
        public = await asker.ask(api, "GET", "/public/x", FORGED)
        assert public.status == 200 and public.identity == {}
        assert sorted(public.to_remove) == sorted(n.lower() for n in FORGED), api


async def test_grpc_raw_header_map_and_statuses(keys: KeyMaker, asker: Asker) -> None:
    """Envoy with `encode_raw_headers: true` sends header_map (values as raw bytes)."""
    key = await keys.key(["read"])

    def request(target: str, headers: list[tuple[str, str]]) -> pb.CheckRequest:
        return pb.CheckRequest(
            attributes=ac.AttributeContext(
                request=ac.AttributeContext.Request(
                    http=ac.AttributeContext.HttpRequest(
                        method="GET",
                        path=target,
                        header_map=HeaderMap(
                            headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in headers]
                        ),
                    )
                )
            )
        )

    ok = await asker.grpc.Check(
        request("/api/read/x", [("authorization", key.auth["Authorization"])])
    )
    assert ok.status.code == code_pb2.OK
    assert grpc_answer(ok).identity["x-keygate-key-id"] == key.display_prefix
    # Repeated fields stay repeated in header_map: ambiguous credentials, as on the proxy.
    both = await asker.grpc.Check(
        request("/api/read/x", [("x-api-key", key.secret), ("x-api-key", key.secret)])
    )
    assert grpc_answer(both).status == 400
    expected = {
        "/api/read/x": (code_pb2.UNAUTHENTICATED, 401),
        "/nowhere": (code_pb2.NOT_FOUND, 404),
        "/api/read/a%2fb": (code_pb2.INVALID_ARGUMENT, 400),
    }
    for target, (grpc_code, status) in expected.items():
        denied = await asker.grpc.Check(request(target, []))
        assert denied.status.code == grpc_code, target
        assert denied.denied_response.status.code == status
        body = json.loads(denied.denied_response.body)
        assert body["error"]["code"] == denied.status.message
    missing = await asker.grpc.Check(request("/api/read/x", []))
    names = {o.header.key.lower() for o in missing.denied_response.headers}
    assert {"www-authenticate", "content-type", "cache-control", "x-request-id"} <= names


async def test_grpc_refuses_what_envoy_would_never_send(asker: Asker) -> None:
    empty = grpc_answer(await asker.grpc.Check(pb.CheckRequest()))
    assert (empty.status, empty.code) == (400, "invalid_request")
    huge = await asker.grpc_check("GET", "/api/read/x", {f"x-h{i}": "v" for i in range(200)})
    assert (huge.status, huge.code) == (431, "headers_too_large")
    try:
        await asker.grpc.Check(
            pb.CheckRequest(
                attributes=ac.AttributeContext(
                    request=ac.AttributeContext.Request(
                        http=ac.AttributeContext.HttpRequest(method="GET", body="x" * 2_000_000)
                    )
                )
            ),
            timeout=10,
        )
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    else:
        raise AssertionError("a 2 MB CheckRequest was accepted")


async def test_nginx_gets_the_body_in_a_header(asker: Asker) -> None:
    answer = await asker.ask("nginx", "GET", "/api/read/x")
    assert answer.status == 401
    assert json.loads(answer.headers["x-keygate-error"]) == answer.body


async def test_a_check_request_must_say_which_request(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    cases = [
        ("/nginx", {}, 400, "X-Original-Method"),
        ("/nginx", {"X-Original-Method": "GET"}, 400, "X-Original-URI"),
        ("/forward-auth", {"X-Forwarded-Method": "GET"}, 400, "X-Forwarded-Uri"),
        ("/elsewhere", {}, 404, "/forward-auth"),
    ]
    for path, headers, status, named in cases:
        async with http.get(gateway.check_url + path, headers=headers) as reply:
            body = await reply.json()
            assert reply.status == status, (path, body)
            assert named in body["error"]["message"]


async def test_garbled_originals_are_400_never_500(asker: Asker) -> None:
    targets = [
        "/api/read/a b",
        "/api/read/x\tz",
        "/api/read/caf\u00e9",
        "/api/read/x#frag",
        "*",
        "api/read/x",
        "//",
    ]
    for api in ("nginx", "forward_auth", "envoy_grpc"):
        for target in targets:
            answer = await asker.ask(api, "GET", target)
            assert answer.status in (400, 404), (api, target, answer)
        # Longer than the proxy's request-line limit (server.max_header_field): 431 there.
        too_long = await asker.ask(api, "GET", "/api/read/" + "a" * 8200)
        assert (too_long.status, too_long.code) == (431, "headers_too_large"), api
        for method in ("G ET", "GET/x", "", "CONNECT"):
            if api != "envoy_grpc" and not method.strip():
                continue  # an empty header is the missing-header case above
            answer = await asker.ask(api, method or "GET", "/api/read/x")
            assert answer.status == 400 or not method, (api, method, answer)


async def test_one_rate_limit_budget_for_proxy_and_checks(keys: KeyMaker, asker: Asker) -> None:
    key = await keys.key(["read"])
    # /api/limited/**: 3 per hour, counted per key and route wherever it is decided.
    spent = []
    for api in ("proxy", "nginx", "envoy_grpc"):
        answer = await asker.ask(api, "GET", "/api/limited/x", key.auth)
        assert answer.status == 200, api
        spent.append(answer.headers.get("ratelimit-remaining"))
    assert spent == ["2", "1", "0"]
    for api in ("envoy", "forward_auth", "proxy"):
        answer = await asker.ask(api, "GET", "/api/limited/x", key.auth)
        assert (answer.status, answer.code) == (429, "rate_limited"), api
        assert int(answer.headers["retry-after"]) > 0


async def test_checks_stamp_last_use_and_are_counted_and_logged(
    gateway: GatewayProcess, keys: KeyMaker, asker: Asker, http: aiohttp.ClientSession
) -> None:
    key = await keys.key(["read"])
    before = await scrape(http, gateway.admin_url)
    for api in CHECK_APIS:
        assert (await asker.ask(api, "GET", "/api/read/x", key.auth)).status == 200
    answer = await asker.ask("nginx", "GET", "/api/read/x", {"X-Request-Id": "check-log-1"})
    assert answer.status == 401
    deadline = time.monotonic() + 5
    while (await keys.service.get_key(ACTOR, key.id)).last_used_at is None:
        assert time.monotonic() < deadline, "a key used only through checks was never stamped"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.2)  # the worker's tallies reach the registry every second
    after = await scrape(http, gateway.admin_url)
    checks = moved(before, after, "keygate_check_requests_total")
    for api in CHECK_APIS:
        assert checks[labels(api=api, outcome="allowed")] == 1, checks
    assert checks[labels(api="nginx", outcome="missing_api_key")] == 1
    requests = moved(before, after, "keygate_requests_total")
    assert requests[labels(route="read", method="GET", code="200", outcome="allowed")] == 4
    line = await access_line(gateway, "check-log-1")
    assert (line["route"], line["status"], line["outcome"]) == ("read", 401, "missing_api_key")
    assert line["path"] == "/api/read/x"
