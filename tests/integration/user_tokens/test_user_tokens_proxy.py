"""User tokens beside API keys (SPEC §11), through a real `keygate serve` trusting the real
OpenID provider of tests/oidc/, in front of the echo upstream (which answers with what it
received)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from joserfc.jwk import RSAKey

from tests.integration.user_tokens import tokens as t
from tests.integration.user_tokens.conftest import (
    ALICE,
    BOB,
    GHOST,
    ORG,
    Idp,
    new_keys,
    token_config,
)
from tests.support.configs import gateway_env
from tests.support.credentials import ROOT_TOKEN
from tests.support.errors import Reply, assert_error, invalid_token_header
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    start_gateway,
    stopped_cleanly,
)
from tests.support.keys import ACTOR, KeyMaker, key_maker
from tests.support.oidc_provider import access_token
from tests.support.stores import Stores


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def gateway_for(
    idp: Idp,
    upstream: UpstreamProcess,
    stores: Stores,
    tmp_path: Path,
    workers: int | None = None,
    **kw: Any,
) -> GatewayProcess:
    return start_gateway(
        token_config(upstream, idp.issuer, **kw), tmp_path, gateway_env(stores), workers=workers
    )


@pytest.fixture
def gateway(
    idp: Idp, echo_upstream: UpstreamProcess, clean_stores: Stores, tmp_path: Path
) -> Iterator[GatewayProcess]:
    with stopped_cleanly(gateway_for(idp, echo_upstream, clean_stores, tmp_path)) as gw:
        yield gw


@pytest.fixture
async def keys(gateway: GatewayProcess) -> AsyncIterator[KeyMaker]:
    async with key_maker(gateway.config_path, gateway.env) as maker:
        await maker.service.create_org(ACTOR, ORG)
        yield maker


async def call(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> Reply:
    async with http.get(url, headers=headers or {}) as resp:
        return Reply(resp.status, resp.headers, await resp.text())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def received(reply: Reply) -> dict[str, str]:
    """The headers the echo upstream received (last value of each, lower-cased names)."""
    return {k.lower(): v for k, v in reply.ok()["headers"]}


async def test_a_key_and_a_user_token_on_the_same_route(
    idp: Idp, gateway: GatewayProcess, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    key = await keys.key(["read"], org=ORG)
    rs256 = access_token(idp.running, ALICE, "RS256")
    es256 = access_token(idp.running, ALICE, "ES256")
    spoofed = {"X-Keygate-Subject": "root", "X_Keygate_Credential": "key", "x.keygate.org": "evil"}
    url = gateway.url + "/api/v1/sessions/42"

    as_key = received(await call(http, url, {**key.auth, **spoofed}))
    assert as_key["x-keygate-credential"] == "key"
    assert as_key["x-keygate-key-id"] == key.display_prefix
    assert as_key["x-keygate-org"] == ORG
    assert "x-keygate-subject" not in as_key

    for token in (rs256, es256):
        as_user = received(await call(http, url, {**bearer(token), **spoofed}))
        assert as_user["x-keygate-credential"] == "user"
        assert as_user["x-keygate-subject"] == ALICE.client_id
        assert as_user["x-keygate-org"] == ORG
        assert as_user["x-keygate-scopes"] == "read manage events"
        assert "x-keygate-key-id" not in as_user and "x-keygate-env" not in as_user
        assert "authorization" not in as_user
        assert not {k for k in as_user if k.replace("_", "-").replace(".", "-") != k}
        again = received(await call(http, url, bearer(token)))  # the cached path
        assert again["x-keygate-subject"] == ALICE.client_id

    # The org in the path, scopes (wildcards as for keys), and the checks on the org claim.
    assert (await call(http, gateway.url + f"/api/v1/orgs/{ORG}/x", bearer(rs256))).status == 200
    wrong = await call(http, gateway.url + "/api/v1/orgs/other-org/x", bearer(rs256))
    assert_error(wrong, 403, "wrong_org")
    scope = await call(http, gateway.url + "/api/v1/admin/x", bearer(rs256))
    assert_error(scope, 403, "insufficient_scope")
    assert 'error="insufficient_scope", scope="admin"' in scope.headers["WWW-Authenticate"]
    wild = t.signed(idp.keys.rsa, t.claims(idp.issuer, scope="manage:*"))
    assert (await call(http, gateway.url + "/api/v1/wild/x", bearer(wild))).status == 200
    ghost = await call(http, url, bearer(access_token(idp.running, GHOST)))
    assert_error(ghost, 401, "invalid_token")
    # X-API-Key only ever carries keys.
    as_header = await call(http, url, {"X-API-Key": rs256})
    assert_error(as_header, 401, "invalid_api_key")


def hostile(idp: Idp) -> list[tuple[str, str, str]]:
    """(name, token, expected code): each must be refused with its 401."""
    iss = idp.issuer
    rsa, ec = idp.keys.rsa, idp.keys.ec
    now = int(time.time())
    stranger = RSAKey.generate_key(2048, {"alg": "RS256"}, private=True)
    stranger.ensure_kid()
    return [
        ("alg none", t.unsigned(t.claims(iss), rsa.kid), "invalid_token"),
        (
            "HS256 keyed with the RSA public key",
            t.hs256_with_public_key(rsa, t.claims(iss)),
            "invalid_token",
        ),
        (
            "ES256 header naming the RSA key",
            t.signed(ec, t.claims(iss), kid=rsa.kid),
            "invalid_token",
        ),
        ("unknown kid", t.signed(stranger, t.claims(iss)), "invalid_token"),
        ("known kid, another key", t.signed(stranger, t.claims(iss), kid=rsa.kid), "invalid_token"),
        ("expired", t.signed(rsa, t.claims(iss, exp=now - 60, iat=now - 120)), "expired_token"),
        ("not yet valid", t.signed(rsa, t.claims(iss, nbf=now + 300)), "invalid_token"),
        ("wrong issuer", t.signed(rsa, t.claims("https://evil.example.com")), "invalid_token"),
        ("wrong audience", t.signed(rsa, t.claims(iss, aud=["other-api"])), "invalid_token"),
        ("no exp", t.signed(rsa, t.claims(iss, exp=None)), "invalid_token"),
        (
            "crit",
            t.rs256_by_hand(
                rsa, {"alg": "RS256", "kid": rsa.kid, "crit": ["x"], "x": 1}, t.claims(iss)
            ),
            "invalid_token",
        ),
        ("oversized", t.signed(rsa, t.claims(iss, pad="x" * 9000)), "invalid_token"),
        ("JWE", t.encrypted(rsa, t.claims(iss)), "invalid_token"),
        ("a key with three dots", "kg_live_abc.def.ghi.jkl", "invalid_api_key"),
        ("unknown org", t.signed(rsa, t.claims(iss, org="nobody-here")), "invalid_token"),
    ]


async def test_hostile_tokens_are_refused(
    idp: Idp, gateway: GatewayProcess, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    url = gateway.url + "/api/v1/sessions/1"
    good = t.signed(idp.keys.rsa, t.claims(idp.issuer))
    assert (await call(http, url, bearer(good))).status == 200  # the control
    assert (
        await call(
            http, url, bearer(t.signed(idp.keys.ec, t.claims(idp.issuer, aud=["x", "keygate-api"])))
        )
    ).status == 200
    for name, token, code in hostile(idp):
        started = time.monotonic()
        reply = await call(http, url, bearer(token))
        assert reply.status == 401, (name, reply.status, reply.text)
        assert_error(reply, 401, code)
        invalid_token_header(reply.headers)
        assert time.monotonic() - started < 2, name
    assert_error(await call(http, url), 401, "missing_api_key")


async def test_rotation_is_picked_up_and_an_outage_keeps_known_keys(
    idp: Idp, gateway: GatewayProcess, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    url = gateway.url + "/api/v1/sessions/1"
    before = access_token(idp.running, ALICE)
    assert (await call(http, url, bearer(before))).status == 200
    old = idp.keys
    rotated = new_keys()
    rotated.older = [old.rsa, old.ec]
    idp.stop()
    idp.start(rotated)  # the provider now signs with a new kid, still publishing the old
    after = access_token(idp.running, ALICE)
    assert after.split(".")[0] != before.split(".")[0]
    assert (await call(http, url, bearer(after))).status == 200  # no gateway restart
    assert (await call(http, url, bearer(before))).status == 200

    idp.stop()  # the provider is gone
    assert (await call(http, url, bearer(after))).status == 200  # cached token
    fresh = t.signed(rotated.ec, t.claims(idp.issuer, sub="svc-bob"))  # never seen, known key
    assert (await call(http, url, bearer(fresh))).status == 200
    unknown = new_keys()
    started = time.monotonic()
    reply = await call(http, url, bearer(t.signed(unknown.rsa, t.claims(idp.issuer))))
    assert_error(reply, 401, "invalid_token")
    assert time.monotonic() - started < 4


async def until(predicate: Any, bound: float = 1.0) -> float:
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < bound, "not within the bound"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_revocation_reaches_every_worker_within_a_second(
    idp: Idp,
    echo_upstream: UpstreamProcess,
    clean_stores: Stores,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    gw = gateway_for(idp, echo_upstream, clean_stores, tmp_path, workers=2)
    with stopped_cleanly(gw):
        async with key_maker(gw.config_path, gw.env) as maker:
            await maker.service.create_org(ACTOR, ORG)
            url = gw.url + "/api/v1/sessions/1"
            alice = access_token(idp.running, ALICE)
            bob = access_token(idp.running, BOB)
            for _ in range(20):  # warm both workers' caches
                assert (await call(http, url, bearer(alice))).status == 200
            run = await maker.cli_ok("tokens", "revoke", "--org", ORG, "--subject", ALICE.client_id)
            assert ALICE.client_id in run

            async def all_refused() -> bool:
                replies = [await call(http, url, bearer(alice)) for _ in range(10)]
                return all(r.status == 401 for r in replies)

            await until(all_refused, 1.0)
            reply = await call(http, url, bearer(alice))
            assert_error(reply, 401, "revoked_token")
            invalid_token_header(reply.headers)
            assert (await call(http, url, bearer(bob))).status == 200
            await asyncio.sleep(1.1)  # iat has whole seconds: a token of the next second
            assert (await call(http, url, bearer(access_token(idp.running, ALICE)))).status == 200

            # The admin API's operation, audited in the org.
            admin = gw.admin_url + f"/admin/v1/orgs/{ORG}/user-tokens/revoke"
            root = {"Authorization": f"Bearer {ROOT_TOKEN}"}
            async with http.post(admin, json={"subject": BOB.client_id}, headers=root) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            assert body["subject"] == BOB.client_id and body["issuer"] is None
            assert body["revoked_by"] == "root"
            async with http.post(
                admin, json={"subject": "x", "issuer": "https://nope.example"}, headers=root
            ) as resp:
                assert_error(
                    Reply(resp.status, resp.headers, await resp.text()),
                    400,
                    "invalid_request",
                    "issuer",
                )

            async def bob_refused() -> bool:
                return (await call(http, url, bearer(bob))).status == 401

            await until(bob_refused, 1.0)
            audit = gw.admin_url + f"/admin/v1/orgs/{ORG}/audit?action=user_token.revoke"
            async with http.get(audit, headers=root) as resp:
                entries = (await resp.json())["items"]
            assert {e["details"]["subject"] for e in entries} == {ALICE.client_id, BOB.client_id}


async def test_rate_limits_count_per_subject(
    idp: Idp, gateway: GatewayProcess, keys: KeyMaker, http: aiohttp.ClientSession
) -> None:
    url = gateway.url + "/api/v1/limited"
    first, second = (
        access_token(idp.running, ALICE, "RS256"),
        access_token(idp.running, ALICE, "ES256"),
    )
    assert (await call(http, url, bearer(first))).status == 200
    assert (await call(http, url, bearer(second))).status == 200
    limited = await call(http, url, bearer(first))
    assert_error(limited, 429, "rate_limited")
    assert (await call(http, url, bearer(access_token(idp.running, BOB)))).status == 200


async def test_websocket_closed_on_revocation_and_on_expiry(
    idp: Idp,
    echo_upstream: UpstreamProcess,
    clean_stores: Stores,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    gw = gateway_for(idp, echo_upstream, clean_stores, tmp_path, leeway="0s")
    with stopped_cleanly(gw):
        async with key_maker(gw.config_path, gw.env) as maker:
            await maker.service.create_org(ACTOR, ORG)
            ws_url = gw.url.replace("http://", "ws://") + "/api/v1/events"
            alice = access_token(idp.running, ALICE)
            async with http.ws_connect(ws_url, headers=bearer(alice)) as ws:
                await ws.send_str("hello")
                assert (await ws.receive(5)).data == "hello"
                await maker.cli_ok("tokens", "revoke", "--org", ORG, "--subject", ALICE.client_id)
                started = time.monotonic()
                msg = await ws.receive(5)
                assert msg.type == WSMsgType.CLOSE and msg.data == 1008, msg
                assert time.monotonic() - started < 1.0

            short = access_token(idp.running, BOB, "ES256", ttl=2)
            async with http.ws_connect(ws_url, headers=bearer(short)) as ws:
                msg = await ws.receive(6)
                assert msg.type == WSMsgType.CLOSE and msg.data == 1008, msg
