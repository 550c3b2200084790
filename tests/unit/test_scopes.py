"""Tests for gateway.keys.scopes: syntax, normalisation, the grant rule and the catalogue."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.keys.scopes import (
    MAX_SCOPE_LENGTH,
    ScopeCatalogue,
    ScopeError,
    UnknownScope,
    grants,
    missing_scopes,
    normalise_scopes,
    validate_scope,
)

VALID = [
    "read",
    "send",
    "manage",
    "keys:manage",
    "workflows:read",
    "workflows:*",
    "*",
    "a:b:c",
    "a:b:*",
    "v1.read",
    "user_profile",
    "x-y",
    "A",
    "0",
    "a" * MAX_SCOPE_LENGTH,
]
INVALID = [
    "",
    " ",
    "read ",
    " read",
    "re ad",
    "workflows:",
    ":read",
    "a::b",
    "**",
    "*:read",
    "workflows:*:read",
    "workflows*",
    "read,write",
    "read\n",
    "é",
    "a/b",
    "a" * (MAX_SCOPE_LENGTH + 1),
    None,
    1,
    ["read"],
]


@pytest.mark.parametrize("scope", VALID)
def test_valid_scopes(scope: str) -> None:
    assert validate_scope(scope) == scope


@pytest.mark.parametrize("scope", INVALID, ids=repr)
def test_invalid_scopes(scope: object) -> None:
    with pytest.raises(ScopeError) as info:
        validate_scope(scope)
    assert str(info.value)


def test_invalid_scope_message_names_the_scope() -> None:
    with pytest.raises(ScopeError, match="'a::b'"):
        validate_scope("a::b")


def test_normalise_sorts_and_deduplicates() -> None:
    assert normalise_scopes(["send", "read", "send", "workflows:*"]) == (
        "read",
        "send",
        "workflows:*",
    )
    assert normalise_scopes([]) == ()
    with pytest.raises(ScopeError):
        normalise_scopes(["read", ""])


GRANTS = [
    # held, wanted, granted
    ("read", "read", True),
    ("read", "send", False),
    ("read", "reads", False),
    ("read", "read:x", False),
    ("*", "read", True),
    ("*", "workflows:read", True),
    ("*", "a:b:c", True),
    ("*", "*", True),
    ("workflows:*", "workflows:read", True),
    ("workflows:*", "workflows:write", True),
    ("workflows:*", "workflows:a:b", True),
    ("workflows:*", "workflows:*", True),
    ("workflows:*", "workflows", False),
    ("workflows:*", "workflowsx:read", False),
    ("workflows:*", "workflowsx", False),
    ("workflows:*", "other:read", False),
    ("workflows:*", "read", False),
    ("workflows:*", "*", False),
    ("workflows:read", "workflows:*", False),
    ("workflows:read", "workflows", False),
    ("workflows", "workflows:read", False),
    ("a:b:*", "a:b:c", True),
    ("a:b:*", "a:c", False),
    ("a:*", "a:b:c", True),
]


@pytest.mark.parametrize(("held", "wanted", "granted"), GRANTS)
def test_grants(held: str, wanted: str, granted: bool) -> None:
    assert grants(held, wanted) is granted


MISSING = [
    ([], [], ()),
    ([], ["read"], ("read",)),
    (["read"], [], ()),
    (["read"], ["read"], ()),
    (["read"], ["read", "send"], ("send",)),
    (["send", "read"], ["read", "send"], ()),
    (["*"], ["read", "workflows:write", "keys:manage"], ()),
    (
        ["workflows:*"],
        ["workflows:read", "workflows", "workflowsx:read"],
        ("workflows", "workflowsx:read"),
    ),
    (["workflows:*", "workflows"], ["workflows", "workflows:read"], ()),
    (["read"], ["write", "read", "manage"], ("write", "manage")),
]


@pytest.mark.parametrize(("held", "required", "missing"), MISSING)
def test_missing_scopes(held: list[str], required: list[str], missing: tuple[str, ...]) -> None:
    assert missing_scopes(held, required) == missing
    assert missing_scopes(iter(held), iter(required)) == missing  # one-shot iterables too


parts = st.from_regex(r"[A-Za-z0-9_.-]{1,10}", fullmatch=True)


@given(ns=parts, name=parts)
def test_namespace_wildcard_property(ns: str, name: str) -> None:
    assert grants(f"{ns}:*", f"{ns}:{name}")
    assert not grants(f"{ns}:*", ns)
    assert not grants(f"{ns}:*", f"{ns}x:{name}")
    assert grants("*", f"{ns}:{name}")
    validate_scope(f"{ns}:{name}")
    validate_scope(f"{ns}:*")


# --- the scope catalogue ----------------------------------------------------------------

CATALOGUE = ScopeCatalogue(
    {
        "read": "r",
        "manage": "m",
        "workflows:read": "wr",
        "workflows:runs:cancel": "wc",
        "keys:manage": "km",
    },
    where="keygate.yaml line 12",
)

KNOWS = [
    # scope, known, nearest known name offered when it is not
    ("read", True, None),
    ("workflows:read", True, None),
    ("*", True, None),  # always: it covers everything catalogued
    ("workflows:*", True, None),  # covers workflows:read
    ("workflows:runs:*", True, None),
    ("keys:*", True, None),
    ("reed", False, "read"),
    ("Read", False, "read"),
    ("mange", False, "manage"),
    ("workflows:raed", False, "workflows:read"),
    ("keys:mange", False, "keys:manage"),
    ("workflow:*", False, "workflows:*"),  # a wildcard is offered a wildcard
    ("workflows:read:*", False, "workflows:*"),  # covers nothing catalogued
    ("read:*", False, None),  # `read` itself is not under `read:`
    ("billing:*", False, None),
    ("xyzzy", False, None),
    ("workflows", False, "workflows:read"),
]


@pytest.mark.parametrize(("scope", "known", "nearest"), KNOWS)
def test_catalogue_knows(scope: str, known: bool, nearest: str | None) -> None:
    assert CATALOGUE.knows(scope) is known
    if known:
        CATALOGUE.check([scope])
        return
    with pytest.raises(UnknownScope) as info:
        CATALOGUE.check(["read", scope])
    assert (info.value.scope, info.value.suggestion) == (scope, nearest)
    assert isinstance(info.value, ScopeError)  # callers that catch ScopeError see it


def test_unknown_scope_message_says_where_and_what_was_meant() -> None:
    with pytest.raises(UnknownScope) as info:
        CATALOGUE.check(["reed"])
    assert str(info.value) == (
        'scope "reed" is not in the scopes catalogue (keygate.yaml line 12); did you mean "read"?'
    )
    with pytest.raises(UnknownScope) as info:
        ScopeCatalogue({"read": "r"}).check(["xyzzy"])
    assert str(info.value) == 'scope "xyzzy" is not in the scopes catalogue'
