"""SPEC §3 through a real `keygate serve`: every status, code, header and body shape.

Allowed requests are checked on what the echo upstream received; refusals on the exact
response, and (where it matters) on the upstream never having been reached.
"""

from __future__ import annotations

import asyncio
import random
import string
import time

import aiohttp
import pytest

from gateway.keys.format import BASE62, base62_checksum
from tests.integration.proxy.harness import raw_error
from tests.integration.proxy.wire import bearer, close_writer, raw_request, upstream_header
from tests.support.errors import REALM, get_error, invalid_token_header
from tests.support.gateway_process import GatewayProcess
from tests.support.keys import KeyMaker

# --- routing before authentication ------------------------------------------------------


async def test_no_route_is_404_without_asking_for_a_key(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    for path in ("/nowhere", "/api", "/api/readx/1", "/API/read/1", "/publicx"):
        _, reply = await get_error(http, gateway.url + path, 404, "no_route")
        assert "WWW-Authenticate" not in reply.headers  # auth was not attempted
    # A garbage key changes nothing: no route, no authentication.
    await get_error(
        http,
        gateway.url + "/nowhere",
        404,
        "no_route",
        headers={"Authorization": "Bearer nonsense"},
    )
    # A route exists for the path but not the method: also 404, still before auth.
    await get_error(http, gateway.url + "/api/read/x", 404, "no_route", method="DELETE")


async def test_public_route_needs_no_key_and_gets_no_identity(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        gateway.url + "/public/status?x=1", headers={"X-Keygate-Org": "spoofed"}
    ) as reply:
        assert reply.status == 200
        report = await reply.json()
    assert report["path"] == "/public/status"
    assert report["query"] == "x=1"
    assert not [k for k, _ in report["headers"] if k.lower().startswith("x-keygate-")]


# --- credentials --------------------------------------------------------------------------


async def test_missing_key_is_401_with_bare_realm(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    _, reply = await get_error(http, gateway.url + "/api/read/x", 401, "missing_api_key")
    assert reply.headers.getall("WWW-Authenticate") == [REALM]
    # Another scheme is not an API key: still missing.
    _, reply = await get_error(
        http,
        gateway.url + "/api/read/x",
        401,
        "missing_api_key",
        headers={"Authorization": "Basic dXNlcjpwYXNz"},
    )
    assert reply.headers["WWW-Authenticate"] == REALM


async def test_key_is_never_taken_from_the_query_string(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    for name in ("api_key", "apikey", "key", "access_token", "X-API-Key", "token"):
        error, _ = await get_error(
            http, gateway.url + f"/api/read/x?{name}={key.secret}", 401, "missing_api_key"
        )
        assert key.secret not in error["message"]
    # Nor from a body.
    await get_error(
        http,
        gateway.url + "/api/any/x",
        401,
        "missing_api_key",
        method="POST",
        data=f"api_key={key.secret}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


@pytest.mark.parametrize(
    "header",
    [
        ("Authorization", "Bearer {}"),
        ("Authorization", "bearer {}"),
        ("Authorization", "BEARER {}"),
        ("X-API-Key", "{}"),
        ("x-api-key", "{}"),
        ("X-Api-Key", "{}"),
    ],
)
async def test_key_accepted_in_either_header_any_case(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker, header: tuple[str, str]
) -> None:
    key = await keys.key(["read"])
    name, template = header
    async with http.get(
        gateway.url + "/api/read/ok", headers={name: template.format(key.secret)}
    ) as reply:
        assert reply.status == 200, await reply.text()
        report = await reply.json()
    assert upstream_header(report, "X-Keygate-Key-Id") == [key.display_prefix]


async def test_same_key_in_both_headers_is_accepted(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    async with http.get(
        gateway.url + "/api/read/ok", headers={**key.auth, "X-API-Key": key.secret}
    ) as reply:
        assert reply.status == 200


async def test_ambiguous_credentials_are_400(gateway: GatewayProcess, keys: KeyMaker) -> None:
    a = await keys.key(["read"])
    b = await keys.key(["read"])
    port = gateway.proxy_port
    cases = {
        "two different keys": [bearer(a.secret), ("X-API-Key", b.secret)],
        "two different keys, one unknown": [
            ("X-API-Key", a.secret),
            ("Authorization", "Bearer kg_live_whatever"),
        ],
        "X-API-Key repeated": [("X-API-Key", a.secret), ("X-API-Key", a.secret)],
        "X-API-Key repeated, other case": [("X-API-Key", a.secret), ("x-api-key", b.secret)],
        "Authorization repeated": [bearer(a.secret), bearer(a.secret)],
    }
    for label, headers in cases.items():
        reply = await raw_request(port, "GET", "/api/read/x", headers)
        error = raw_error(reply, 400, "invalid_request")
        assert a.secret not in error["message"] and b.secret not in error["message"], label


def _random_base62(n: int) -> str:
    return "".join(random.choice(BASE62) for _ in range(n))


async def test_invalid_keys_are_401_invalid_api_key(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    unknown_body = "kg_live_" + _random_base62(8) + _random_base62(32)
    flipped = key.secret[:-7] + ("A" if key.secret[-7] != "A" else "B") + key.secret[-6:]
    presented = {
        "malformed": "not-a-key",
        "too short": "kg_live_abc",
        "unknown prefix": "kg_nope_" + key.secret[len("kg_live_") :],
        "bad checksum": key.secret[:-1] + ("x" if key.secret[-1] != "x" else "y"),
        "typo in secret": flipped,
        "unknown id": unknown_body + base62_checksum(unknown_body),
        "wrong secret": key.with_secret(_random_base62(32)),
        "non-ascii": "kg_live_" + "é" * 46,
        "punctuation": "kg_live_" + string.punctuation[:46],
    }
    for label, value in presented.items():
        for headers in ({"Authorization": f"Bearer {value}"}, {"X-API-Key": value}):
            try:
                error, reply = await get_error(
                    http, gateway.url + "/api/read/x", 401, "invalid_api_key", headers=headers
                )
            except AssertionError as exc:
                raise AssertionError(f"{label}: {exc}") from None
            invalid_token_header(reply.headers)
            assert value not in error["message"]
            assert value not in reply.headers["WWW-Authenticate"]
    # And the real key still works after all that.
    async with http.get(gateway.url + "/api/read/x", headers=key.auth) as reply:
        assert reply.status == 200


async def test_expired_key_is_401_expired_api_key(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"], expires_in=1.5)
    async with http.get(gateway.url + "/api/read/x", headers=key.auth) as reply:
        assert reply.status == 200
    assert key.expires_at is not None
    await asyncio.sleep(max(0.0, key.expires_at.timestamp() - time.time()) + 0.1)
    error, reply = await get_error(
        http, gateway.url + "/api/read/x", 401, "expired_api_key", headers=key.auth
    )
    assert error["message"] == "API key has expired"
    assert invalid_token_header(reply.headers) == (
        f'{REALM}, error="invalid_token", error_description="API key has expired"'
    )


async def test_revoked_key_is_401_revoked_api_key(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    async with http.get(gateway.url + "/api/read/x", headers=key.auth) as reply:
        assert reply.status == 200
    await keys.cli_ok("keys", "revoke", key.display_prefix, "--reason", "leaked")
    _, reply = await get_error(
        http, gateway.url + "/api/read/x", 401, "revoked_api_key", headers=key.auth
    )
    invalid_token_header(reply.headers)


async def test_revoked_key_never_seen_by_the_gateway(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    await keys.revoke(key.id)
    await get_error(http, gateway.url + "/api/read/x", 401, "revoked_api_key", headers=key.auth)


# --- authorisation ------------------------------------------------------------------------


async def test_missing_scope_is_403_with_required_scopes(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    _, reply = await get_error(
        http,
        gateway.url + "/api/write/x",
        403,
        "insufficient_scope",
        method="POST",
        headers=key.auth,
        data=b"{}",
    )
    assert reply.headers["WWW-Authenticate"] == (
        f'{REALM}, error="insufficient_scope", scope="write"'
    )
    _, reply = await get_error(
        http, gateway.url + "/api/multi", 403, "insufficient_scope", headers=key.auth
    )
    assert reply.headers["WWW-Authenticate"] == (
        f'{REALM}, error="insufficient_scope", scope="read reports:export"'
    )


async def test_scope_wildcards_grant_access(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    star = await keys.key(["*"])
    namespaced = await keys.key(["read", "reports:*"])
    for key in (star, namespaced):
        async with http.get(gateway.url + "/api/multi", headers=key.auth) as reply:
            assert reply.status == 200, await reply.text()


async def test_org_parameter_must_be_the_keys_org(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    other = await keys.org("other")
    async with http.get(gateway.url + f"/api/orgs/{key.org}/things", headers=key.auth) as reply:
        assert reply.status == 200
        report = await reply.json()
    assert report["path"] == f"/api/orgs/{key.org}/things"
    assert upstream_header(report, "X-Keygate-Org") == [key.org]
    for org in (other, key.org.upper(), key.org + "x"):
        await get_error(
            http, gateway.url + f"/api/orgs/{org}/things", 403, "wrong_org", headers=key.auth
        )
    # The org check runs on the decoded segment: an escaped spelling of the same org is fine.
    escaped = "".join(f"%{ord(c):02X}" if c == "-" else c for c in key.org)
    raw = await raw_request(
        gateway.proxy_port, "GET", f"/api/orgs/{escaped}/t", [bearer(key.secret)]
    )
    assert raw.status == 200, raw.body


async def test_test_env_key_is_accepted_and_labelled(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"], env="test")
    assert key.secret.startswith("kg_test_")
    async with http.get(gateway.url + "/api/read/x", headers=key.auth) as reply:
        assert reply.status == 200
        report = await reply.json()
    assert upstream_header(report, "X-Keygate-Env") == ["test"]


# --- every response ----------------------------------------------------------------------


async def test_no_server_banner_with_versions(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    replies: list[tuple[str, str]] = []
    for path, headers in (
        ("/api/read/x", key.auth),
        ("/api/read/x", {}),
        ("/nope", {}),
        ("/public/x", {}),
        ("/_demo/redirect", key.auth),
    ):
        async with http.get(gateway.url + path, headers=headers, allow_redirects=False) as r:
            replies.append((path, r.headers.get("Server", "")))
    # Requests the HTTP parser refuses, answered before any handler runs.
    for raw in (b"GARBAGE\r\n\r\n", b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
        writer.write(raw)
        head = (await reader.read(4096)).decode("latin-1")
        await close_writer(writer)
        banner = [line for line in head.split("\r\n") if line.lower().startswith("server:")]
        replies.append((raw.decode()[:10], banner[0] if banner else ""))
    for where, server in replies:
        assert "aiohttp" not in server.lower() and "python" not in server.lower(), (where, server)
