"""Sign-in, sessions and invite links on the real stores, with a clock the test moves:
idle and absolute expiry, one-time 24 h links, throttling without account enumeration."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from gateway.config import load_config
from gateway.keys.errors import InvalidInput
from gateway.keys.models import Actor
from gateway.people.errors import SignInFailed, SignInThrottled
from gateway.people.service import PeopleService
from gateway.people.throttle import ThrottlePolicy
from tests.integration.people.conftest import (
    BROWSER,
    PASSWORD,
    make_people,
    token_of,
    unique_email,
)
from tests.support.admin_client import unique_slug
from tests.support.clock import Clock
from tests.support.configs import TEST_CONFIG
from tests.support.credentials import SECRET
from tests.support.stores import Stores

ROOT = Actor(principal="root")
IP = "203.0.113.9"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def timed(stores: Stores, clock: Clock) -> AsyncIterator[PeopleService]:
    service = make_people(stores.database_url, clock)
    try:
        yield service
    finally:
        await service.db.close()
        service.hasher.close()


async def new_org(service: PeopleService) -> str:
    slug = unique_slug("sess")
    async with service.db.connection() as conn:
        await conn.execute("INSERT INTO orgs (slug, name) VALUES ($1, $1)", slug)
    return slug


async def signed_up(service: PeopleService, role: str = "owner") -> tuple[str, str, str]:
    """(org, email, session id) of a new person who accepted their invite."""
    org = await new_org(service)
    email = unique_email(role)
    invite = await service.invite(ROOT, email, org, role)
    signed = await service.accept_invite(invite.token, PASSWORD, client_ip=IP, user_agent=BROWSER)
    return org, email, signed.session_id


async def test_idle_and_absolute_expiry(timed: PeopleService, clock: Clock) -> None:
    _org, _email, session_id = await signed_up(timed)
    info = await timed.session(session_id)
    assert info is not None and info.csrf_token
    clock.advance(hours=7, minutes=59)
    assert await timed.session(session_id) is not None  # and last_seen moves on
    clock.advance(hours=7, minutes=59)
    assert await timed.session(session_id) is not None  # active: idle counts from last use
    clock.advance(hours=8, seconds=1)
    assert await timed.session(session_id) is None  # idle for more than 8 h

    _org, _email, kept_busy = await signed_up(timed)
    for _ in range(7 * 24 // 6 - 1):
        clock.advance(hours=6)
        assert await timed.session(kept_busy) is not None
    clock.advance(hours=6, seconds=1)  # past 7 days however busy
    assert await timed.session(kept_busy) is None


async def test_last_seen_is_written_at_most_once_a_minute(
    timed: PeopleService, clock: Clock
) -> None:
    _org, email, session_id = await signed_up(timed)

    async def last_seen() -> object:
        async with timed.db.connection() as conn:
            return await conn.fetchval(
                """SELECT s.last_seen_at FROM sessions s JOIN users u ON u.id = s.user_id
                   WHERE u.email = $1""",
                email,
            )

    first = clock.now
    clock.advance(seconds=30)
    await timed.session(session_id)
    assert await last_seen() == first
    clock.advance(seconds=31)
    await timed.session(session_id)
    assert await last_seen() == clock.now


async def test_invite_links_work_once_and_for_24_hours(timed: PeopleService, clock: Clock) -> None:
    org = await new_org(timed)
    invite = await timed.invite(ROOT, unique_email(), org, "admin")
    with pytest.raises(InvalidInput) as short:
        await timed.accept_invite(invite.token, "too short", client_ip=IP, user_agent=None)
    assert short.value.field == "password"
    await timed.accept_invite(invite.token, PASSWORD, client_ip=IP, user_agent=None)
    assert await timed.pending_invite(invite.token) is None
    with pytest.raises(InvalidInput) as used:
        await timed.accept_invite(invite.token, PASSWORD, client_ip=IP, user_agent=None)
    assert used.value.field == "token" and "expired or was already used" in used.value.message

    late = await timed.invite(ROOT, unique_email(), org, "member")
    clock.advance(hours=24, seconds=1)
    assert await timed.pending_invite(late.token) is None
    with pytest.raises(InvalidInput, match="expired or was already used"):
        await timed.accept_invite(late.token, PASSWORD, client_ip=IP, user_agent=None)
    for bogus in ("", "x", "A" * 43):
        assert await timed.pending_invite(bogus) is None


async def test_an_owners_link_cannot_take_over_an_existing_account(
    timed: PeopleService,
) -> None:
    other_org, email, _session = await signed_up(timed, "owner")
    org = await new_org(timed)
    owner = Actor(principal="user:boss@example.com", roles={org: "owner"})
    invite = await timed.invite(owner, email, org, "member")
    # The owner who made the link cannot set the person's password with it...
    with pytest.raises(InvalidInput) as refused:
        await timed.accept_invite(
            invite.token, "attacker's new password", client_ip=IP, user_agent=None
        )
    assert refused.value.field == "password"
    # ...the person accepts it with the password they have.
    signed = await timed.accept_invite(invite.token, PASSWORD, client_ip=IP, user_agent=None)
    assert dict(signed.info.roles) == {other_org: "owner", org: "member"}


async def test_sign_in_gives_one_answer_and_is_throttled(stores: Stores, clock: Clock) -> None:
    service = make_people(stores.database_url, clock)
    service.throttle = ThrottlePolicy(per_email=5, per_ip=1000, window=900)
    try:
        _org, email, _session = await signed_up(service)
        signed = await service.sign_in_password(
            email.upper(), PASSWORD, client_ip=IP, user_agent=BROWSER
        )
        assert await service.session(signed.session_id) is not None

        # Wrong password, unknown email, disabled user: the same error and message.
        disabled = (await signed_up(service))[1]
        await service.disable_user(ROOT, disabled)
        messages = set()
        for who, password in (
            (email, "wrong password!!"),
            (unique_email("nobody"), PASSWORD),
            (disabled, PASSWORD),
            ("not an email", PASSWORD),
        ):
            with pytest.raises(SignInFailed) as failed:
                await service.sign_in_password(who, password, client_ip=IP, user_agent=None)
            assert failed.value.status == 401
            messages.add(failed.value.message)
        assert len(messages) == 1

        # Five attempts per email in the window; the sixth is refused even when right.
        for _ in range(4):
            with pytest.raises(SignInFailed):
                await service.sign_in_password(
                    email, "wrong password!!", client_ip=IP, user_agent=None
                )
        with pytest.raises(SignInThrottled) as throttled:
            await service.sign_in_password(email, PASSWORD, client_ip=IP, user_agent=None)
        assert throttled.value.status == 429 and 0 < throttled.value.retry_after <= 900
        # An unknown email is throttled the same way: nothing tells them apart.
        nobody = unique_email("nobody")
        for _ in range(5):
            with pytest.raises(SignInFailed):
                await service.sign_in_password(nobody, PASSWORD, client_ip=IP, user_agent=None)
        with pytest.raises(SignInThrottled) as unknown:
            await service.sign_in_password(nobody, PASSWORD, client_ip=IP, user_agent=None)
        assert unknown.value.message == throttled.value.message
        # Once the window has passed, the right password works again.
        clock.advance(seconds=901)
        await service.sign_in_password(email, PASSWORD, client_ip=IP, user_agent=None)
    finally:
        await service.db.close()
        service.hasher.close()


async def test_throttled_per_client_address_across_emails(stores: Stores, clock: Clock) -> None:
    service = make_people(stores.database_url, clock)
    service.throttle = ThrottlePolicy(per_email=100, per_ip=3, window=60)
    address = f"198.51.100.{clock.now.microsecond % 250 + 1}"
    try:
        _org, email, _session = await signed_up(service)
        # A successful sign-in does not count against its address.
        for _ in range(5):
            await service.sign_in_password(email, PASSWORD, client_ip=address, user_agent=None)
        for _ in range(3):
            with pytest.raises(SignInFailed):
                await service.sign_in_password(
                    unique_email(), PASSWORD, client_ip=address, user_agent=None
                )
        with pytest.raises(SignInThrottled):
            await service.sign_in_password(email, PASSWORD, client_ip=address, user_agent=None)
        # Another address is not affected.
        await service.sign_in_password(email, PASSWORD, client_ip="192.0.2.77", user_agent=None)
    finally:
        await service.db.close()
        service.hasher.close()


async def test_sso_signs_in_existing_people_only(timed: PeopleService) -> None:
    org, email, _session = await signed_up(timed, "admin")
    signed = await timed.sign_in_sso(email.upper(), "Ana", client_ip=IP, user_agent=BROWSER)
    assert dict(signed.info.roles) == {org: "admin"}
    with pytest.raises(SignInFailed, match="ask an owner"):
        await timed.sign_in_sso(unique_email(), "X", client_ip=IP, user_agent=None)
    await timed.disable_user(ROOT, email)
    with pytest.raises(SignInFailed):
        await timed.sign_in_sso(email, "Ana", client_ip=IP, user_agent=None)


async def test_disabling_a_user_ends_their_sessions(timed: PeopleService) -> None:
    _org, email, session_id = await signed_up(timed)
    assert await timed.session(session_id) is not None
    user = await timed.disable_user(ROOT, email)
    assert user.disabled
    assert await timed.session(session_id) is None
    person = Actor(principal=f"user:{email}", roles={})
    with pytest.raises(Exception, match="only the root admin"):
        await timed.disable_user(person, email)


async def test_keygate_dev_signs_the_developer_in(stores: Stores, timed: PeopleService) -> None:
    """`keygate dev` makes dev@localhost an owner of `demo` and prints a link that works,
    a fresh one on every run."""
    from gateway import dev

    config = dataclasses.replace(
        load_config(str(TEST_CONFIG), {"KEYGATE_DATABASE_URL": stores.database_url}),
        secret=SECRET,
    )
    async with timed.db.connection() as conn:
        await conn.execute(
            "INSERT INTO orgs (slug, name) VALUES ('demo', 'Demo org') ON CONFLICT DO NOTHING"
        )
    first = await dev._sign_in_link(config)
    second = await dev._sign_in_link(config)
    assert first and second and first != second
    assert first.startswith(f"http://{config.listen.admin}/console/invite/")
    signed = await timed.accept_invite(
        token_of(second), PASSWORD, client_ip="127.0.0.1", user_agent=None
    )
    assert signed.info.user.email == "dev@localhost"
    assert signed.info.roles["demo"] == "owner"
