"""Who may revoke a person's user tokens, and what a revocation covers (SPEC §6, §11):
the admin API operation from a console session (owner, admin, member, another org; CSRF
and Origin as for every cookie change) and from an API key with `keys:manage`; the CLI's
`--issuer`; a token without `iat`. Through a real `keygate serve` trusting the real
OpenID provider, checked by what the proxy then does with the tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.people.service import PeopleService
from tests.integration.people.conftest import BROWSER, Person, join, make_people
from tests.integration.user_tokens import tokens as t
from tests.integration.user_tokens.conftest import ALICE, BOB, ORG, Idp, running_idp
from tests.integration.user_tokens.support import bearer, call, issuers_config, within
from tests.support.admin_client import AdminClient
from tests.support.configs import gateway_env
from tests.support.credentials import ROOT_TOKEN
from tests.support.errors import assert_error
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    start_gateway,
    stopped_cleanly,
)
from tests.support.keys import ACTOR, key_maker
from tests.support.oidc_provider import access_token
from tests.support.stores import Stores

OTHER_ORG = "globex"
BOUND = 1.0  # SPEC §11: refused on every instance within 1 s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: each call says which session it sends.
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=15), cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield session


@pytest.fixture
def gateway(
    idp: Idp, echo_upstream: UpstreamProcess, clean_stores: Stores, tmp_path: Path
) -> Iterator[GatewayProcess]:
    config = issuers_config(echo_upstream, [idp.issuer])
    gw = start_gateway(config, tmp_path, gateway_env(clean_stores))
    with stopped_cleanly(gw):
        yield gw


@pytest.fixture
async def people(clean_stores: Stores) -> AsyncIterator[PeopleService]:
    service = make_people(clean_stores.database_url)
    try:
        yield service
    finally:
        await service.db.close()
        service.hasher.close()


@pytest.fixture
async def root(http: aiohttp.ClientSession, gateway: GatewayProcess) -> AdminClient:
    admin = AdminClient(http, gateway.admin_url, ROOT_TOKEN)
    for slug in (ORG, OTHER_ORG):
        (await admin.call("POST", "/orgs", {"slug": slug})).ok(201)
    return admin


def revoke_path(org: str = ORG) -> str:
    return f"/orgs/{org}/user-tokens/revoke"


async def refused_within(
    http: aiohttp.ClientSession, url: str, token: str, code: str = "revoked_token"
) -> None:
    async def refused() -> bool:
        return (await call(http, url, bearer(token))).status == 401

    await within(refused, BOUND)
    assert_error(await call(http, url, bearer(token)), 401, code)


async def test_console_sessions_revoke_by_role_with_csrf_and_origin(
    idp: Idp,
    gateway: GatewayProcess,
    root: AdminClient,
    people: PeopleService,
    http: aiohttp.ClientSession,
) -> None:
    url = gateway.url + "/api/v1/sessions/1"
    alice, bob = access_token(idp.running, ALICE), access_token(idp.running, BOB)
    for token in (alice, bob):
        assert (await call(http, url, bearer(token))).status == 200
    owner: Person = await join(root, people, ORG, "owner")
    admin = await join(root, people, ORG, "admin")
    member = await join(root, people, ORG, "member")
    outsider = await join(root, people, OTHER_ORG, "owner")
    body = {"subject": ALICE.client_id}

    # Refused before anything is looked up or written: a member, another org's owner, and
    # a cookie change without the CSRF token or from another origin.
    assert_error(await member.call("POST", revoke_path(), body), 403, "forbidden")
    assert_error(await outsider.call("POST", revoke_path(), body), 404, "not_found")
    assert_error(await owner.call("POST", revoke_path(), body, csrf=None), 403, "csrf_failed")
    assert_error(await owner.call("POST", revoke_path(), body, csrf="x" * 43), 403, "csrf_failed")
    foreign = await owner.call("POST", revoke_path(), body, origin="https://evil.example")
    assert_error(foreign, 403, "csrf_failed")
    assert_error(await owner.call("POST", revoke_path(), body, origin=None), 403, "csrf_failed")
    assert (await call(http, url, bearer(alice))).status == 200  # nothing was revoked
    assert await root.audit(ORG, action="user_token.revoke") == []

    # Bad input names its field.
    for bad in ({}, {"subject": ""}, {"subject": "x" * 256}, {"subject": "t\u00e9"}):
        reply = await owner.call("POST", revoke_path(), bad)
        assert_error(reply, 400, "invalid_request", "subject")
    unknown = await owner.call("POST", revoke_path(), {**body, "issuer": "https://x.example"})
    assert (
        "not a configured user_tokens issuer"
        in assert_error(unknown, 400, "invalid_request", "issuer")["message"]
    )

    # The owner, then an admin: 200, the tokens refused on the proxy within the bound.
    done = (await owner.call("POST", revoke_path(), body)).ok()
    assert done["org"] == ORG and done["subject"] == ALICE.client_id and done["issuer"] is None
    assert done["revoked_by"] == f"user:{owner.email}"
    await refused_within(http, url, alice)
    assert (await call(http, url, bearer(bob))).status == 200
    named = await admin.call(
        "POST", revoke_path(), {"subject": BOB.client_id, "issuer": idp.issuer}
    )
    assert named.ok()["issuer"] == idp.issuer
    await refused_within(http, url, bob)

    entries = await root.audit(ORG, action="user_token.revoke")
    by_subject = {e["details"]["subject"]: e for e in entries}
    assert set(by_subject) == {ALICE.client_id, BOB.client_id}
    assert by_subject[ALICE.client_id]["principal"] == f"user:{owner.email}"
    assert by_subject[ALICE.client_id]["user_agent"] == BROWSER
    assert by_subject[ALICE.client_id]["details"]["issuer"] is None
    assert by_subject[BOB.client_id]["principal"] == f"user:{admin.email}"
    assert by_subject[BOB.client_id]["details"]["issuer"] == idp.issuer
    assert await root.audit(OTHER_ORG, action="user_token.revoke") == []


async def test_a_key_with_keys_manage_revokes_in_its_own_org_only(
    idp: Idp, gateway: GatewayProcess, root: AdminClient, http: aiohttp.ClientSession
) -> None:
    url = gateway.url + "/api/v1/sessions/1"
    alice = access_token(idp.running, ALICE)
    assert (await call(http, url, bearer(alice))).status == 200
    manager = root.as_((await root.create_key(ORG, ["keys:manage"]))["secret"])
    reader = root.as_((await root.create_key(ORG, ["keys:read"]))["secret"])
    stranger = root.as_((await root.create_key(OTHER_ORG, ["keys:manage"]))["secret"])
    body = {"subject": ALICE.client_id}

    assert_error(await reader.call("POST", revoke_path(), body), 403, "forbidden")
    assert_error(await stranger.call("POST", revoke_path(), body), 404, "not_found")
    assert_error(await manager.call("POST", revoke_path(OTHER_ORG), body), 404, "not_found")
    assert_error(await manager.call("POST", revoke_path("no-such-org"), body), 404, "not_found")
    assert (await call(http, url, bearer(alice))).status == 200

    done = (await manager.call("POST", revoke_path(), body)).ok()
    assert done["revoked_by"].startswith("key:"), done
    await refused_within(http, url, alice)
    [entry] = await root.audit(ORG, action="user_token.revoke")
    assert entry["principal"] == done["revoked_by"] and entry["key_id"] is None


async def test_cli_revoke_with_issuer_leaves_other_issuers_tokens_working(
    idp: Idp,
    echo_upstream: UpstreamProcess,
    clean_stores: Stores,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    (tmp_path / "second-idp").mkdir()
    with running_idp(tmp_path / "second-idp") as second:
        config = issuers_config(echo_upstream, [idp.issuer, second.issuer])
        gw = start_gateway(config, tmp_path, gateway_env(clean_stores))
        with stopped_cleanly(gw):
            async with key_maker(gw.config_path, gw.env) as maker:
                await maker.service.create_org(ACTOR, ORG)
                url = gw.url + "/api/v1/sessions/1"
                first = access_token(idp.running, ALICE)
                other = access_token(second.running, ALICE)  # same subject, other issuer
                bob = access_token(idp.running, BOB)
                for token in (first, other, bob):
                    assert (await call(http, url, bearer(token))).status == 200

                run = await maker.cli(
                    "tokens", "revoke", "--org", ORG, "--subject", ALICE.client_id,
                    "--issuer", idp.issuer, "--json",
                )  # fmt: skip
                assert run.code == 0, run.err
                assert run.json()["issuer"] == idp.issuer
                assert run.json()["subject"] == ALICE.client_id
                await refused_within(http, url, first)
                assert (await call(http, url, bearer(other))).status == 200
                assert (await call(http, url, bearer(bob))).status == 200

                # Text output, and errors that name what is wrong (nothing written).
                out = await maker.cli_ok(
                    "tokens", "revoke", "--org", ORG, "--subject", BOB.client_id
                )
                assert out.startswith(f"Revoked the user tokens of {BOB.client_id} for org {ORG}")
                unknown = await maker.cli(
                    "tokens", "revoke", "--org", ORG, "--subject", "x",
                    "--issuer", "https://nope.example",
                )  # fmt: skip
                assert unknown.code != 0 and "issuer" in unknown.err, unknown
                assert second.issuer in unknown.err  # the configured ones are listed
                no_org = await maker.cli(
                    "tokens", "revoke", "--org", "no-such-org", "--subject", "x"
                )
                assert no_org.code != 0 and "no-such-org" in no_org.err, no_org
                await refused_within(http, url, bob)
                assert (await call(http, url, bearer(other))).status == 200


async def test_a_token_without_iat_is_covered_by_any_revocation(
    idp: Idp, gateway: GatewayProcess, root: AdminClient, http: aiohttp.ClientSession
) -> None:
    url = gateway.url + "/api/v1/sessions/1"
    no_iat = t.signed(idp.keys.rsa, t.claims(idp.issuer, iat=None))
    assert (await call(http, url, bearer(no_iat))).status == 200
    (await root.call("POST", revoke_path(), {"subject": ALICE.client_id})).ok()
    await refused_within(http, url, no_iat)
    await asyncio.sleep(1.1)  # iat has whole seconds: what is issued next comes later
    # A token issued after the revocation works again; one without iat cannot show that
    # it came later, so it stays refused, even one never seen before.
    later = t.signed(idp.keys.ec, t.claims(idp.issuer, iat=int(time.time())))
    assert (await call(http, url, bearer(later))).status == 200
    fresh_no_iat = t.signed(idp.keys.ec, t.claims(idp.issuer, iat=None, jti="another"))
    assert_error(await call(http, url, bearer(fresh_no_iat)), 401, "revoked_token")
