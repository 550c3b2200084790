"""People through the admin API: the session cookie as a principal, roles per org, the
members endpoints, CSRF and Origin, and who the audit log names."""

from __future__ import annotations

import pytest

from gateway.people.service import PeopleService
from tests.integration.people.conftest import (
    BROWSER,
    PASSWORD,
    Person,
    join,
    token_of,
    unique_email,
)
from tests.support.admin_client import AdminClient
from tests.support.errors import assert_error


async def test_invited_owner_signs_in_and_manages_keys(
    root: AdminClient, people: PeopleService
) -> None:
    org = await root.create_org("people")
    email = unique_email("Owner")
    invited = (
        await root.call("POST", f"/orgs/{org}/members", {"email": email, "role": "owner"})
    ).ok(201)
    assert invited["member"] == {
        "email": email.lower(),
        "name": "",
        "role": "owner",
        "last_sign_in_at": None,
    }
    assert invited["invite_url"].startswith(root.base_url + "/console/invite/")
    # What the console's set-password page shows, then the password is set.
    token = token_of(invited["invite_url"])
    pending = await people.pending_invite(token)
    assert pending is not None and pending.email == email.lower() and pending.org == org
    signed_in = await people.accept_invite(
        token, PASSWORD, client_ip="127.0.0.1", user_agent=BROWSER
    )
    owner = Person(root.session, root.base_url, email.lower(), signed_in)

    me = (await owner.call("GET", "/me")).ok()
    assert me == {"principal": f"user:{email.lower()}", "orgs": [{"slug": org, "role": "owner"}]}
    created = (
        await owner.call("POST", f"/orgs/{org}/keys", {"name": "from console", "scopes": ["read"]})
    ).ok(201)
    assert created["key"]["created_by"] == f"user:{email.lower()}"
    key_id = created["key"]["id"]
    assert (await owner.call("GET", f"/orgs/{org}/keys")).ok()["items"][0]["id"] == key_id
    revoked = (await owner.call("POST", f"/orgs/{org}/keys/{key_id}/revoke", {})).ok()
    assert revoked["revoked_by"] == f"user:{email.lower()}"

    entries = await root.audit(org)
    by_person = [e for e in entries if e["principal"] == f"user:{email.lower()}"]
    assert {e["action"] for e in by_person} == {"key.create", "key.revoke"}
    for entry in by_person:
        assert entry["client_ip"] == "127.0.0.1"
        assert entry["user_agent"] == BROWSER
        assert entry["request_id"]
    invite_entry = next(e for e in entries if e["action"] == "member.invite")
    assert invite_entry["principal"] == "root"
    assert invite_entry["details"] == {"email": email.lower(), "role": "owner"}
    # Persons never get root powers.
    assert_error(await owner.call("POST", "/orgs", {"slug": org + "-x"}), 403, "forbidden")
    assert [o["slug"] for o in (await owner.call("GET", "/orgs")).ok()["items"]] == [org]


async def test_member_sees_no_keys_and_other_orgs_do_not_exist(
    root: AdminClient, people: PeopleService
) -> None:
    org_a = await root.create_org("people-a")
    org_b = await root.create_org("people-b")
    key = (await root.create_key(org_a, ["read"]))["key"]["id"]
    member = await join(root, people, org_a, "member")
    admin = await join(root, people, org_a, "admin")

    for path in (f"/orgs/{org_a}/keys", f"/orgs/{org_a}/keys/{key}", f"/orgs/{org_a}/audit"):
        assert_error(await member.call("GET", path), 403, "forbidden")
    assert_error(
        await member.call("POST", f"/orgs/{org_a}/keys", {"name": "x", "scopes": ["read"]}),
        403,
        "forbidden",
    )
    assert_error(await member.call("GET", f"/orgs/{org_a}/members"), 403, "forbidden")
    assert (await member.call("GET", "/me")).ok()["orgs"] == [{"slug": org_a, "role": "member"}]

    # The admin of org A: keys of A yes, anything of org B is 404 as if it did not exist.
    assert (await admin.call("GET", f"/orgs/{org_a}/keys/{key}")).ok()["id"] == key
    for path in (f"/orgs/{org_b}/keys", f"/orgs/{org_b}/audit", f"/orgs/{org_b}/members"):
        assert_error(await admin.call("GET", path), 404, "not_found")
    assert_error(await admin.call("GET", f"/orgs/{org_b}/keys/{key}"), 404, "not_found")
    assert_error(
        await admin.call("POST", f"/orgs/{org_b}/keys", {"name": "x", "scopes": ["read"]}),
        404,
        "not_found",
    )
    key_b = (await root.create_key(org_b, ["read"]))["key"]["id"]
    assert_error(await admin.call("GET", f"/orgs/{org_a}/keys/{key_b}"), 404, "not_found")
    assert_error(
        await admin.call("POST", f"/orgs/{org_a}/keys/{key_b}/revoke", {}), 404, "not_found"
    )


async def test_only_owners_change_members_and_the_last_owner_stays(
    root: AdminClient, people: PeopleService
) -> None:
    org = await root.create_org("people-roles")
    owner = await join(root, people, org, "owner")
    admin = await join(root, people, org, "admin")
    member = await join(root, people, org, "member")

    # The admin sees the members but cannot change them.
    listed = (await admin.call("GET", f"/orgs/{org}/members")).ok()["items"]
    assert {(m["email"], m["role"]) for m in listed} == {
        (owner.email, "owner"),
        (admin.email, "admin"),
        (member.email, "member"),
    }
    assert all(m["last_sign_in_at"] for m in listed)
    assert_error(
        await admin.call("PATCH", f"/orgs/{org}/members/{member.email}", {"role": "admin"}),
        403,
        "forbidden",
    )
    assert_error(
        await admin.call("DELETE", f"/orgs/{org}/members/{member.email}"), 403, "forbidden"
    )
    assert_error(
        await admin.call(
            "POST", f"/orgs/{org}/members", {"email": unique_email(), "role": "owner"}
        ),
        403,
        "forbidden",
    )

    # The owner can; the member's new role holds at their next request.
    changed = (
        await owner.call("PATCH", f"/orgs/{org}/members/{member.email}", {"role": "admin"})
    ).ok()
    assert changed["role"] == "admin"
    assert (await member.call("GET", f"/orgs/{org}/keys")).ok()["items"] == []
    newcomer = unique_email("new")
    invited = (
        await owner.call("POST", f"/orgs/{org}/members", {"email": newcomer, "role": "member"})
    ).ok(201)
    assert invited["member"]["email"] == newcomer
    assert_error(
        await owner.call("POST", f"/orgs/{org}/members", {"email": newcomer, "role": "admin"}),
        409,
        "conflict",
        "role",
    )

    # The last owner can be neither demoted nor removed.
    assert_error(
        await owner.call("PATCH", f"/orgs/{org}/members/{owner.email}", {"role": "admin"}),
        409,
        "conflict",
    )
    assert_error(await owner.call("DELETE", f"/orgs/{org}/members/{owner.email}"), 409, "conflict")
    (await owner.call("PATCH", f"/orgs/{org}/members/{admin.email}", {"role": "owner"})).ok()
    (await admin.call("PATCH", f"/orgs/{org}/members/{owner.email}", {"role": "member"})).ok()
    removed = await admin.call("DELETE", f"/orgs/{org}/members/{owner.email}")
    assert removed.status == 204, removed.text
    # Removed: the org no longer exists for them.
    assert_error(await owner.call("GET", f"/orgs/{org}/members"), 404, "not_found")
    assert (await owner.call("GET", "/me")).ok()["orgs"] == []
    actions = [e["action"] for e in await root.audit(org) if e["action"].startswith("member.")]
    assert actions.count("member.role") == 3 and actions.count("member.remove") == 1


async def test_root_manages_members_and_validates_input(root: AdminClient) -> None:
    org = await root.create_org("people-root")
    assert (await root.call("GET", "/me")).ok() == {"principal": "root", "orgs": []}
    assert_error(
        await root.call("POST", f"/orgs/{org}/members", {"email": "not-an-email", "role": "owner"}),
        400,
        "invalid_request",
        "email",
    )
    assert_error(
        await root.call("POST", f"/orgs/{org}/members", {"email": unique_email(), "role": "king"}),
        400,
        "invalid_request",
        "role",
    )
    assert_error(
        await root.call(
            "POST", "/orgs/no-such-org-x/members", {"email": unique_email(), "role": "owner"}
        ),
        404,
        "not_found",
        "org",
    )
    assert_error(
        await root.call("PATCH", f"/orgs/{org}/members/{unique_email()}", {"role": "admin"}),
        404,
        "not_found",
        "email",
    )
    email = unique_email()
    (await root.call("POST", f"/orgs/{org}/members", {"email": email, "role": "owner"})).ok(201)
    assert (await root.call("GET", f"/orgs/{org}/members")).ok()["items"][0]["email"] == email


async def test_keys_cannot_manage_people(root: AdminClient) -> None:
    org = await root.create_org("people-key")
    manager = (await root.create_key(org, ["keys:manage", "read"]))["secret"]
    as_key = root.as_(manager)
    assert (await as_key.call("GET", "/me")).ok()["principal"].startswith("key:")
    assert_error(await as_key.call("GET", f"/orgs/{org}/members"), 403, "forbidden")
    assert_error(
        await as_key.call(
            "POST", f"/orgs/{org}/members", {"email": unique_email(), "role": "owner"}
        ),
        403,
        "forbidden",
    )


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
async def test_cookie_changes_need_the_csrf_token_and_our_origin(
    root: AdminClient, people: PeopleService, method: str
) -> None:
    org = await root.create_org("people-csrf")
    owner = await join(root, people, org, "owner")
    key = (await root.create_key(org, ["read"]))["key"]["id"]
    target = {
        "POST": (f"/orgs/{org}/keys", {"name": "csrf", "scopes": ["read"]}),
        "PATCH": (f"/orgs/{org}/keys/{key}", {"name": "renamed"}),
        "DELETE": (f"/orgs/{org}/members/{owner.email}", None),
    }[method]
    path, body = target
    refusals = [
        await owner.call(method, path, body, csrf=None),
        await owner.call(method, path, body, csrf="forged-" + "x" * 36),
        await owner.call(method, path, body, origin="https://evil.example"),
        await owner.call(method, path, body, origin=None),
        await owner.call(method, path, body, origin="null"),
    ]
    for reply in refusals:
        assert_error(reply, 403, "csrf_failed")
    # Reads need neither; Bearer requests are not cookie-authenticated at all.
    (await owner.call("GET", f"/orgs/{org}/keys", csrf=None, origin=None)).ok()
    bearer = await root.call(
        "PATCH",
        f"/orgs/{org}/keys/{key}",
        {"name": "by root"},
        headers={"Origin": "https://evil.example"},
    )
    assert bearer.status == 200, bearer.text
    # Nothing changed through the refused requests.
    assert (await root.call("GET", f"/orgs/{org}/keys/{key}")).ok()["name"] == "by root"
    assert all(e["principal"] != f"user:{owner.email}" for e in await root.audit(org))


async def test_a_bad_cookie_is_401_not_anonymous(root: AdminClient, people: PeopleService) -> None:
    org = await root.create_org("people-cookie")
    owner = await join(root, people, org, "owner")
    await people.sign_out(owner.signed_in.session_id)
    assert_error(await owner.call("GET", "/me"), 401, "unauthorized")
    async with root.session.get(
        root.base_url + "/admin/v1/me", headers={"Cookie": "keygate_session=garbage"}
    ) as reply:
        assert reply.status == 401
