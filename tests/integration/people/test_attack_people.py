"""Attacks on people, sign-in and invites, turned into tests: each fails without its fix.

- Every spelling of an address shares one throttle bucket (padding it past the email
  length used to buy fresh attempts).
- An owner's invite link for someone who already has a password confirms that password:
  those guesses are throttled like sign-in (they used to be unlimited, so an owner of one
  org could brute-force the password of a member of another).
- A password longer than any account can have never matches by truncation.
- Look-alike addresses (invisible characters, bidi overrides, decomposed accents) are not
  second accounts; names with lone surrogates or bidi overrides are refused, not a 500.
- Anonymous loopback root answers only requests naming a loopback host (DNS rebinding).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.keys.errors import InvalidInput
from gateway.keys.models import Actor
from gateway.people import credentials
from gateway.people.errors import SignInFailed, SignInThrottled
from gateway.people.service import PeopleService
from gateway.people.throttle import ThrottlePolicy
from tests.integration.people.conftest import BROWSER, PASSWORD, make_people, unique_email
from tests.support.admin_client import AdminClient, unique_slug
from tests.support.configs import gateway_env, operator_config
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    closed_port,
    start_gateway,
    stopped_cleanly,
)
from tests.support.stores import Stores

ROOT = Actor(principal="root")


def fresh_ip() -> str:
    """A client address of this test alone (the per-address bucket is shared otherwise)."""
    n = uuid.uuid4().int
    return f"198.18.{n % 250}.{(n >> 8) % 250 + 1}"


@pytest.fixture
async def service(stores: Stores) -> AsyncIterator[PeopleService]:
    people = make_people(stores.database_url)
    people.throttle = ThrottlePolicy(per_email=5, per_ip=1000, window=900)
    try:
        yield people
    finally:
        await people.db.close()
        people.hasher.close()


async def new_org(service: PeopleService) -> str:
    slug = unique_slug("atk")
    async with service.db.connection() as conn:
        await conn.execute("INSERT INTO orgs (slug, name) VALUES ($1, $1)", slug)
    return slug


async def person(service: PeopleService, org: str, role: str, password: str = PASSWORD) -> str:
    email = unique_email(role)
    invite = await service.invite(ROOT, email, org, role)
    await service.accept_invite(invite.token, password, client_ip=fresh_ip(), user_agent=BROWSER)
    return email


async def test_padded_or_recased_emails_share_one_throttle_bucket(service: PeopleService) -> None:
    org = await new_org(service)
    email = await person(service, org, "admin")
    ip = fresh_ip()
    for _ in range(5):
        with pytest.raises(SignInFailed):
            await service.sign_in_password(email, "wrong" * 4, client_ip=ip, user_agent=BROWSER)
    # Each of these names the same account (it signs in with them), so each is throttled,
    # even with the right password: no spelling buys a fresh bucket.
    for variant in (
        email.upper(),
        f"  {email}\t",
        " " * 250 + email,  # longer than an address once padded: was its own bucket
        "\u3000" * 245 + email.title(),
    ):
        assert credentials.lookup_email(variant) == email
        with pytest.raises(SignInThrottled):
            await service.sign_in_password(variant, PASSWORD, client_ip=ip, user_agent=BROWSER)


async def test_an_owners_link_cannot_be_used_to_guess_a_members_password(
    service: PeopleService,
) -> None:
    org_b = await new_org(service)
    victim = await person(service, org_b, "owner", password="victim's own password")
    org_a = await new_org(service)
    owner_a = await person(service, org_a, "owner")
    owner = Actor(principal=f"user:{owner_a}", roles={org_a: "owner"})
    # The owner of A invites the victim (who has a password, in B) and holds the link.
    link = await service.invite(owner, victim, org_a, "member")
    ip = fresh_ip()
    for guess in range(5):
        with pytest.raises(InvalidInput) as wrong:
            await service.accept_invite(
                link.token, f"guess number {guess:04}", client_ip=ip, user_agent=BROWSER
            )
        assert wrong.value.field == "password"
    # Sixth attempt: throttled before the password is looked at, even the right one,
    # from any address (the victim's email bucket is full).
    for address in (ip, fresh_ip()):
        with pytest.raises(SignInThrottled):
            await service.accept_invite(
                link.token, "victim's own password", client_ip=address, user_agent=BROWSER
            )
    # The victim's ordinary sign-in shares that bucket: the guesses were counted there.
    with pytest.raises(SignInThrottled):
        await service.sign_in_password(
            victim, "victim's own password", client_ip=fresh_ip(), user_agent=BROWSER
        )


async def test_the_right_password_on_an_owners_link_clears_the_count(
    service: PeopleService,
) -> None:
    org_b = await new_org(service)
    joiner = await person(service, org_b, "admin", password="joiner's own password")
    org_a = await new_org(service)
    owner_a = await person(service, org_a, "owner")
    owner = Actor(principal=f"user:{owner_a}", roles={org_a: "owner"})
    link = await service.invite(owner, joiner, org_a, "admin")
    ip = fresh_ip()
    for _ in range(4):
        with pytest.raises(InvalidInput):
            await service.accept_invite(
                link.token, "a wrong password", client_ip=ip, user_agent=BROWSER
            )
    signed = await service.accept_invite(
        link.token, "joiner's own password", client_ip=ip, user_agent=BROWSER
    )
    assert signed.info.roles == {org_a: "admin", org_b: "admin"}
    for _ in range(5):  # the count started again
        with pytest.raises(SignInFailed):
            await service.sign_in_password(
                joiner, "a wrong password", client_ip=ip, user_agent=BROWSER
            )


async def test_a_longer_password_never_matches_by_truncation(service: PeopleService) -> None:
    org = await new_org(service)
    longest = "L" * credentials.MAX_PASSWORD
    email = await person(service, org, "owner", password=longest)
    ip = fresh_ip()
    for too_long in (longest + "x", longest + "anything at all"):
        with pytest.raises(SignInFailed):
            await service.sign_in_password(email, too_long, client_ip=ip, user_agent=BROWSER)
    signed = await service.sign_in_password(email, longest, client_ip=ip, user_agent=BROWSER)
    assert signed.info.user.email == email


@pytest.mark.parametrize(
    "disguise",
    [
        "\u200b",  # zero-width space
        "\u200d",  # zero-width joiner
        "\u202e",  # right-to-left override
        "\u2066",  # left-to-right isolate
        "\u00a0",  # no-break space
        "\ufeff",  # byte order mark
        "\ue000",  # private use
    ],
)
async def test_invisible_characters_do_not_make_a_second_person(
    service: PeopleService, disguise: str
) -> None:
    org = await new_org(service)
    with pytest.raises(InvalidInput) as refused:
        await service.invite(
            ROOT, f"ada{disguise}-{uuid.uuid4().hex[:6]}@example.com", org, "member"
        )
    assert refused.value.field == "email"


async def test_composed_and_decomposed_accents_are_one_person(service: PeopleService) -> None:
    org = await new_org(service)
    tag = uuid.uuid4().hex[:6]
    composed = await service.invite(ROOT, f"j\u00f6rg-{tag}@example.com", org, "member")
    again = await service.invite(ROOT, f"J\u006f\u0308RG-{tag}@EXAMPLE.com", org, "member")
    assert again.member.email == composed.member.email == f"j\u00f6rg-{tag}@example.com"


@pytest.mark.parametrize("name", ["\ud800", "Ada \u202eecalevol", "Ada\x85Lovelace"])
async def test_names_that_are_not_printable_text_are_refused(root: AdminClient, name: str) -> None:
    org = unique_slug("atk")
    (await root.call("POST", "/orgs", {"slug": org})).ok(201)
    reply = await root.call(
        "POST", f"/orgs/{org}/members", {"email": unique_email(), "role": "member", "name": name}
    )
    assert reply.status == 400, reply.text
    assert reply.body["error"]["field"] == "name"


# --- anonymous loopback root and DNS rebinding ------------------------------------------


@pytest.fixture(scope="module")
def loopback_gateway(
    stores: Stores, echo_upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = operator_config(
        echo_upstream.url,
        closed_port(),
        admin={"allow_unauthenticated_loopback": True},
        console={"enabled": False},
    )
    log_dir: Path = tmp_path_factory.mktemp("rebinding")
    gw = start_gateway(config, log_dir, gateway_env(stores, admin_token=""), name="rebinding")
    with stopped_cleanly(gw):
        yield gw


async def test_anonymous_loopback_root_refuses_other_host_names(
    loopback_gateway: GatewayProcess,
) -> None:
    """A page of evil.example whose name was re-pointed at 127.0.0.1 is same-origin with
    itself (Origin and Host agree, Sec-Fetch-Site: same-origin); only the Host header
    tells it from the operator's own tools."""
    url = loopback_gateway.admin_url + "/admin/v1/orgs"
    port = loopback_gateway.admin_port
    async with aiohttp.ClientSession() as http:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1"):
            async with http.get(url, headers={"Host": host}) as reply:
                assert reply.status == 200, host
        rebound = f"evil.example:{port}"
        browser = {"Host": rebound, "Origin": f"http://{rebound}", "Sec-Fetch-Site": "same-origin"}
        async with http.get(url, headers={"Host": rebound}) as reply:
            assert reply.status == 401
            assert (await reply.json())["error"]["code"] == "unauthorized"
        async with http.post(url, json={"slug": unique_slug("dns")}, headers=browser) as reply:
            assert reply.status == 401
        for host in (f"127.0.0.1.evil.example:{port}", f"localhost.evil.example:{port}"):
            async with http.get(url, headers={"Host": host}) as reply:
                assert reply.status == 401, host
