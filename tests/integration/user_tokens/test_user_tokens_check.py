"""User tokens (SPEC §11) through the check listeners (§12): the same decisions as the proxy,
with X-Keygate-Credential: user and X-Keygate-Subject in the identity."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.user_tokens.conftest import ALICE, GHOST, ORG, Idp, token_config
from tests.support.configs import gateway_env
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    start_gateway,
    stopped_cleanly,
)
from tests.support.keys import ACTOR, key_maker
from tests.support.oidc_provider import access_token
from tests.support.stores import Stores

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
import grpc

from tests.integration.check.askers import APIS, Asker


@pytest.fixture
def gateway(
    idp: Idp, echo_upstream: UpstreamProcess, clean_stores: Stores, tmp_path: Path
) -> Iterator[GatewayProcess]:
    config = token_config(echo_upstream, idp.issuer)
    env = gateway_env(clean_stores)
    gw = start_gateway(config, tmp_path, env, name="token-check", check=True)
    with stopped_cleanly(gw):
        yield gw


@pytest.fixture
async def asker(gateway: GatewayProcess) -> AsyncIterator[Asker]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.check_grpc_port}") as channel,
    ):
        yield Asker(gateway, http, channel)


async def test_tokens_are_decided_alike_by_every_api(
    idp: Idp, gateway: GatewayProcess, asker: Asker
) -> None:
    async with key_maker(gateway.config_path, gateway.env) as maker:
        await maker.service.create_org(ACTOR, ORG)  # the org the provider's clients name
    token = access_token(idp.running, ALICE)
    ghost = access_token(idp.running, GHOST)
    auth = {"Authorization": f"Bearer {token}"}
    cases: list[tuple[str, str, dict[str, str], int | None, str | None]] = [
        ("GET", "/api/v1/sessions/1", auth, 200, None),
        ("GET", f"/api/v1/orgs/{ORG}/x", auth, 200, None),
        ("GET", "/api/v1/orgs/other/x", auth, 403, "wrong_org"),
        ("GET", "/api/v1/admin/x", auth, 403, "insufficient_scope"),
        ("GET", "/api/v1/orgs/no-such-org/x", {"Authorization": f"Bearer {ghost}"}, None, None),
        ("GET", "/api/v1/sessions/1", {"Authorization": f"Bearer {token[:-4]}AAAA"}, 401, None),
    ]
    for method, target, headers, status, code in cases:
        answers = {api: await asker.ask(api, method, target, headers) for api in APIS}
        summary = {api: (a.status, a.code) for api, a in answers.items()}
        assert len(set(summary.values())) == 1, (target, summary)
        if status is not None:
            assert answers["proxy"].status == status, (target, summary)
        if code is not None:
            assert answers["proxy"].code == code
        if answers["proxy"].status == 200:
            identity = answers["proxy"].identity
            assert identity["x-keygate-credential"] == "user"
            assert identity["x-keygate-subject"]
            assert "x-keygate-key-id" not in identity
            for api, answer in answers.items():
                assert answer.identity == identity, api
