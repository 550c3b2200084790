"""What operators see of user tokens (SPEC §8, §11): the access-log line (the subject, never
a key prefix or the token) and the outcomes counted in `keygate_requests_total`; and
issuers whose keys cannot be had — provider down at start, a discovery document or JWKS
that cannot be used, a provider that never answers — which give a prompt 503, never a
401, a 500 or a hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.embedded import free_port
from tests.integration.user_tokens import tokens as t
from tests.integration.user_tokens.conftest import ALICE, ORG, Idp, new_keys
from tests.integration.user_tokens.support import access_line, bearer, call, issuers_config
from tests.support.configs import gateway_env
from tests.support.errors import Reply, assert_error
from tests.support.gateway_process import (
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.keys import ACTOR, key_maker
from tests.support.metrics import moved, scrape
from tests.support.oidc_provider import access_token
from tests.support.stores import Stores


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def test_access_log_and_metrics_name_the_subject_and_the_outcome(
    idp: Idp,
    echo_upstream: UpstreamProcess,
    clean_stores: Stores,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    gw = start_gateway(
        issuers_config(echo_upstream, [idp.issuer]), tmp_path, gateway_env(clean_stores)
    )
    with stopped_cleanly(gw):
        async with key_maker(gw.config_path, gw.env) as maker:
            await maker.service.create_org(ACTOR, ORG)
            url = gw.url + "/api/v1/sessions/1"
            alice = access_token(idp.running, ALICE)
            now = int(time.time())
            expired = t.signed(idp.keys.rsa, t.claims(idp.issuer, exp=now - 60, iat=now - 120))
            forged = alice[: alice.rindex(".") + 1] + "AAAA"
            key = await maker.key(["read"], org=ORG)
            assert (await call(http, url, bearer(alice))).status == 200  # JWKS fetched

            before = await scrape(http, gw.admin_url)
            ok = await call(http, url, {**bearer(alice), "User-Agent": "dashboard/1.0"})
            as_key = await call(http, url, key.auth)
            scope = await call(http, gw.url + "/api/v1/admin/x", bearer(alice))
            bad = await call(http, url, bearer(forged))
            old = await call(http, url, bearer(expired))
            await maker.cli_ok("tokens", "revoke", "--org", ORG, "--subject", ALICE.client_id)
            revoked = await refused(http, url, alice)
            after = await scrape(http, gw.admin_url)

            line = await access_line(gw, ok.headers["X-Request-Id"])
            assert line["status"] == 200 and line["outcome"] == "allowed"
            assert line["key"] is None and line["org"] == ORG
            assert line["subject"] == ALICE.client_id
            assert line["user_agent"] == "dashboard/1.0"
            keyed = await access_line(gw, as_key.headers["X-Request-Id"])
            assert keyed["key"] == key.display_prefix and "subject" not in keyed
            # A refusal about a verified token names its subject; one about a token that
            # did not verify names nobody. The token itself is never written.
            for reply, status, outcome, subject in (
                (scope, 403, "insufficient_scope", ALICE.client_id),
                (revoked, 401, "revoked_token", ALICE.client_id),
                (bad, 401, "invalid_token", None),
                (old, 401, "expired_token", None),
            ):
                entry = await access_line(gw, reply.headers["X-Request-Id"])
                assert (entry["status"], entry["outcome"]) == (status, outcome), entry
                assert entry["key"] is None and entry.get("subject") == subject, entry
                assert entry["org"] == (ORG if subject else None), entry
            stdout = gw.process.stdout()
            for token in (alice, forged, expired):
                assert token not in stdout and token.split(".")[2] not in stdout

            counted = moved(before, after, "keygate_requests_total")
            for code, outcome in (
                ("200", "allowed"),
                ("401", "invalid_token"),
                ("401", "expired_token"),
                ("401", "revoked_token"),
            ):
                found = {
                    lbl: n
                    for lbl, n in counted.items()
                    if ("outcome", outcome) in lbl and ("code", code) in lbl
                }
                assert found, (outcome, counted)
                assert all(("method", "GET") in lbl for lbl in found), found
            assert any(("outcome", "insufficient_scope") in lbl for lbl in counted), counted


async def refused(http: aiohttp.ClientSession, url: str, token: str) -> Reply:
    """The first 401 for `token` (a revocation is heard within a second)."""
    deadline = time.monotonic() + 1.0
    while True:
        reply = await call(http, url, bearer(token))
        if reply.status == 401 or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------ issuers' keys not had


class BrokenProvider:
    """An in-test HTTP server posing as several broken identity providers, one per path."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    def base(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}/{rest:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self._stopping.set()  # the hanging answers end: cleanup waits for handlers
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        name, rest = request.match_info["name"], request.match_info["rest"]
        self.hits[name] = self.hits.get(name, 0) + 1
        discovery = rest == ".well-known/openid-configuration"
        if name == "other-issuer" and discovery:
            return web.json_response({"issuer": "https://idp.elsewhere.example", "jwks_uri": ""})
        if name == "plain-http-jwks" and discovery:
            return web.json_response(
                {"issuer": self.base(name), "jwks_uri": "http://idp.example.com/jwks"}
            )
        if name == "no-jwks-uri" and discovery:
            return web.json_response({"issuer": self.base(name)})
        if name == "server-error":
            return web.Response(status=500, text="oops")
        if name == "not-json":
            return web.Response(text="<html>sign in</html>", content_type="text/html")
        if name == "no-keys":
            return web.json_response({"keys": [{"kty": "nonsense"}]})
        if name == "hangs":
            await self._stopping.wait()
        return web.Response(status=404)


@pytest.fixture
async def broken() -> AsyncIterator[BrokenProvider]:
    provider = BrokenProvider()
    await provider.start()
    try:
        yield provider
    finally:
        await provider.stop()


async def test_issuers_whose_keys_were_never_fetched_answer_503_promptly(
    broken: BrokenProvider,
    echo_upstream: UpstreamProcess,
    clean_stores: Stores,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    issuers: list[str | dict[str, Any]] = [
        down,  # nothing listens: discovery fails at start and at first use
        broken.base("other-issuer"),  # its discovery document names another issuer
        broken.base("plain-http-jwks"),  # … a jwks_uri that is http on a public host
        broken.base("no-jwks-uri"),
        broken.base("server-error"),  # discovery answers 500
        broken.base("not-json"),
        {"issuer": broken.base("jwks-404"), "jwks_url": broken.base("jwks-404") + "/jwks"},
        {"issuer": broken.base("no-keys"), "jwks_url": broken.base("no-keys") + "/jwks"},
        broken.base("hangs"),  # never answers: each fetch is bounded
    ]
    config = issuers_config(echo_upstream, issuers)
    gw = start_gateway(config, tmp_path, gateway_env(clean_stores))
    with stopped_cleanly(gw):
        async with key_maker(gw.config_path, gw.env) as maker:
            await maker.service.create_org(ACTOR, ORG)
            url = gw.url + "/api/v1/sessions/1"
            signer = new_keys().rsa
            names = [i if isinstance(i, str) else str(i["issuer"]) for i in issuers]
            for issuer in names:
                token = t.signed(signer, t.claims(issuer))
                started = time.monotonic()
                # Ten at once: none waits on another's fetch for long, none gets a 401.
                replies = await asyncio.gather(*(call(http, url, bearer(token)) for _ in range(10)))
                took = time.monotonic() - started
                for reply in replies:
                    error = assert_error(reply, 503, "auth_unavailable")
                    assert reply.headers.get("Retry-After"), reply.headers
                    assert "WWW-Authenticate" not in reply.headers
                    assert "signing keys" in error["message"], error
                assert took < 4.0, (issuer, took)
            # The provider that hangs is asked once at a time, not once per request.
            assert broken.hits.get("hangs", 0) <= 2, broken.hits
            # The operator learns which issuer and why.
            await asyncio.sleep(0.2)
            log = gw.process.stdout() + gw.process.stderr()
            assert down in log and "could not be fetched" in log
            assert broken.base("other-issuer") in log and "names another issuer" in log
            assert "jwks_uri is not https" in log and "no valid jwks_uri" in log
            assert "HTTP 500" in log and "not a JSON object" in log
            assert "no usable signing keys" in log
            # A key still works beside them.
            key = await maker.key(["read"], org=ORG)
            assert (await call(http, url, key.auth)).status == 200


async def test_a_provider_down_at_start_is_used_once_it_answers(
    echo_upstream: UpstreamProcess,
    clean_stores: Stores,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    idp = Idp(tmp_path, free_port(), new_keys())  # configured, not started yet
    gw = start_gateway(
        issuers_config(echo_upstream, [idp.issuer]), tmp_path, gateway_env(clean_stores)
    )
    with stopped_cleanly(gw):
        async with key_maker(gw.config_path, gw.env) as maker:
            await maker.service.create_org(ACTOR, ORG)
            url = gw.url + "/api/v1/sessions/1"
            token = t.signed(idp.keys.rsa, t.claims(idp.issuer))
            reply = await call(http, url, bearer(token))
            assert_error(reply, 503, "auth_unavailable")
            idp.start()
            try:
                # The background refresh retries (every 10 s after a failure): then the
                # same token is accepted, with no restart and no 401 meanwhile.
                deadline = time.monotonic() + 15
                while True:
                    reply = await call(http, url, bearer(token))
                    if reply.status == 200:
                        break
                    assert_error(reply, 503, "auth_unavailable")
                    assert time.monotonic() < deadline, "the provider's keys were never fetched"
                    await asyncio.sleep(0.25)
                fresh = access_token(idp.running, ALICE)
                assert (await call(http, url, bearer(fresh))).status == 200
            finally:
                idp.stop()
