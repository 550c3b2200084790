"""`keygate users invite|list|disable` and `keygate sessions revoke --user` (SPEC §6),
against the stores a running gateway uses: a revoked session ends at its next request."""

from __future__ import annotations

import time

from gateway.people.service import PeopleService
from tests.integration.people.conftest import BROWSER, PASSWORD, Person, join, token_of
from tests.integration.people.conftest import unique_email as new_email
from tests.support.admin_client import AdminClient
from tests.support.cli import Cli, CliResult, run_keygate
from tests.support.errors import assert_error
from tests.support.gateway_process import GatewayProcess


async def test_invite_prints_a_one_time_link_for_the_first_owner(
    gateway: GatewayProcess, root: AdminClient, people: PeopleService
) -> None:
    async def keygate(*args: str) -> CliResult:
        result = await run_keygate(gateway.config_path, gateway.env, *args)
        assert result.code == 0, result.err
        return result

    org = await root.create_org("cli-people")
    email = new_email("First")
    result = await keygate(
        "users", "invite", email, "--org", org, "--role", "owner", "--name", "Ana"
    )
    assert gateway.admin_url + "/console/invite/" in result.out
    link = next(w for w in result.out.split() if "/console/invite/" in w)
    assert "not shown again" in result.out
    signed = await people.accept_invite(
        token_of(link), PASSWORD, client_ip="127.0.0.1", user_agent=BROWSER
    )
    owner = Person(root.session, root.base_url, email.lower(), signed)
    assert (await owner.call("GET", f"/orgs/{org}/members")).ok()["items"] == [
        {
            "email": email.lower(),
            "name": "Ana",
            "role": "owner",
            "last_sign_in_at": (await owner.call("GET", f"/orgs/{org}/members")).ok()["items"][0][
                "last_sign_in_at"
            ],
        }
    ]
    again = (
        await keygate("users", "invite", email, "--org", org, "--role", "owner", "--json")
    ).json()
    assert again["member"]["role"] == "owner" and token_of(again["invite_url"]) != token_of(link)
    entry = next(e for e in await root.audit(org) if e["action"] == "member.invite")
    assert entry["principal"].startswith("cli:")

    listed = (await keygate("users", "list", "--json")).json()["items"]
    mine = next(u for u in listed if u["email"] == email.lower())
    assert mine["orgs"] == [{"slug": org, "role": "owner"}] and mine["has_password"]
    assert email.lower() in (await keygate("users", "list")).out


def test_cli_errors_and_usage(cli: Cli) -> None:
    org = "cli-people-err"
    cli.ok("orgs", "create", org)
    unknown = cli("users", "invite", new_email(), "--org", "no-such-org-z", "--role", "admin")
    assert unknown.code == 1 and "unknown org" in unknown.err and unknown.err.count("\n") == 1
    bad_email = cli("users", "invite", "nope", "--org", org, "--role", "admin")
    assert bad_email.code == 1 and "email" in bad_email.err
    assert cli("users", "invite", new_email(), "--org", org, "--role", "king").code == 2
    assert cli("users", "invite", new_email(), "--role", "admin").code == 2
    assert cli("users", "disable", new_email()).code == 1
    assert cli("sessions", "revoke").code == 2
    assert cli("sessions", "revoke", "--user", new_email()).code == 1


async def test_sessions_revoke_ends_them_at_the_next_request(
    gateway: GatewayProcess, root: AdminClient, people: PeopleService
) -> None:
    org = await root.create_org("cli-revoke")
    person = await join(root, people, org, "admin")
    second = await people.sign_in_password(
        person.email, PASSWORD, client_ip="127.0.0.1", user_agent=BROWSER
    )
    other = Person(root.session, root.base_url, person.email, second)
    (await person.call("GET", f"/orgs/{org}/keys")).ok()
    (await other.call("GET", "/me")).ok()

    result = await run_keygate(
        gateway.config_path, gateway.env, "sessions", "revoke", "--user", person.email, "--json"
    )
    assert result.code == 0, result.err
    revoked_at = time.monotonic()
    assert result.json() == {"user": person.email, "revoked": 2}
    assert_error(await person.call("GET", f"/orgs/{org}/keys"), 401, "unauthorized")
    assert_error(await other.call("GET", "/me"), 401, "unauthorized")
    assert time.monotonic() - revoked_at < 1.0
    entry = next(e for e in await root.audit(org) if e["action"] == "user.sessions_revoke")
    assert entry["principal"].startswith("cli:") and entry["details"]["sessions"] == 2

    # Signing in again works; disabling ends that session too and refuses sign-in.
    third = await people.sign_in_password(
        person.email, PASSWORD, client_ip="127.0.0.1", user_agent=BROWSER
    )
    again = Person(root.session, root.base_url, person.email, third)
    (await again.call("GET", "/me")).ok()
    disabled = await run_keygate(gateway.config_path, gateway.env, "users", "disable", person.email)
    assert disabled.code == 0, disabled.err
    assert_error(await again.call("GET", "/me"), 401, "unauthorized")
