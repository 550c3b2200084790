"""The pure rules of people: emails, passwords, tokens, CSRF tokens and the actor kinds."""

from __future__ import annotations

import pytest

from gateway.keys.errors import InvalidInput
from gateway.keys.models import Actor
from gateway.people import credentials
from gateway.people.models import invite_path, invite_url


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Ana@Example.COM", "ana@example.com"),
        ("  dev@localhost ", "dev@localhost"),
        ("o'neil+keys@example.co.uk", "o'neil+keys@example.co.uk"),
    ],
)
def test_emails_are_stored_lower_cased(typed: str, stored: str) -> None:
    assert credentials.normalise_email(typed) == stored


@pytest.mark.parametrize(
    "typed", ["", "ana", "@example.com", "ana@", "a b@example.com", "a@b@c", "a\n@b.c", 5]
)
def test_what_is_not_an_email(typed: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        credentials.normalise_email(typed)
    assert refused.value.field == "email"
    if isinstance(typed, str):
        assert credentials.lookup_email(typed) is None


@pytest.mark.parametrize(
    ("password", "ok"),
    [("x" * 11, False), ("x" * 12, True), ("é" * 12, True), ("x" * 1025, False), (None, False)],
)
def test_passwords_are_at_least_12_characters(password: object, ok: bool) -> None:
    if ok:
        assert credentials.check_password(password) == password
    else:
        with pytest.raises(InvalidInput) as refused:
            credentials.check_password(password)
        assert refused.value.field == "password"


def test_tokens_digests_and_csrf() -> None:
    token = credentials.new_token()
    assert credentials.well_formed_token(token) and len(token) == 43
    assert not credentials.well_formed_token(token + "x")
    assert not credentials.well_formed_token("../" + token[3:])
    assert len(credentials.digest(token)) == 32
    assert credentials.digest(token) != credentials.digest(credentials.new_token())
    one = credentials.csrf_token(b"secret", token)
    assert one == credentials.csrf_token(b"secret", token)
    assert one != credentials.csrf_token(b"other", token)
    assert one != credentials.csrf_token(b"secret", credentials.new_token())
    assert credentials.same_token(one, one) and not credentials.same_token(
        one, one[:-1] + ("B" if one.endswith("A") else "A")
    )
    assert credentials.email_bucket("Ana@example.com ") == credentials.email_bucket(
        "ana@example.com"
    )
    assert "ana" not in credentials.email_bucket("ana@example.com")


def test_invite_links() -> None:
    assert invite_path("abc") == "/console/invite/abc"
    assert (
        invite_url("https://kg.example.com/", "abc") == "https://kg.example.com/console/invite/abc"
    )


def test_actor_kinds_are_explicit() -> None:
    assert Actor(principal="root").kind == "root"
    assert Actor(principal="cli:ana").is_root
    key = Actor(principal="key:kg_live_abcdefgh", org="acme", scopes=("keys:manage",))
    assert key.kind == "key" and key.is_key and not key.is_root
    person = Actor(principal="user:ana@example.com", roles={})
    # No role anywhere still is a person: never root.
    assert person.kind == "person" and not person.is_root and not person.is_key
    assert person.role_in("acme") is None
    with pytest.raises(ValueError):
        Actor(principal="user:ana@example.com", org="acme", roles={"acme": "owner"})
    with pytest.raises(ValueError):
        Actor(principal="root", roles={"acme": "owner"})
