"""The pure rules of the people service: who may act on an org, which inputs are
acceptable (roles, names, user agents, passwords at sign-in) and what an invite link may
do. No I/O; each check returns the clean value or raises one specific error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.keys.errors import Forbidden, InvalidInput, NotFound
from gateway.keys.models import Actor
from gateway.people import credentials
from gateway.people.models import ROLES

if TYPE_CHECKING:
    from gateway.store.people_queries import StoredInvite

MAX_NAME = 200
MAX_USER_AGENT = 512


# --- permissions --------------------------------------------------------------------------


def require_root(actor: Actor, what: str) -> None:
    """Forbidden unless the actor is the root admin (CLI or root token)."""
    if not actor.is_root:
        raise Forbidden(f"only the root admin (keygate CLI or root token) can {what}")


def require_owner(actor: Actor, org: str) -> None:
    """Root, or an owner of `org`: who may manage its members."""
    require_role(actor, org, ("owner",), "manage members")


def require_role(actor: Actor, org: str, allowed: tuple[str, ...], what: str) -> None:
    """Root passes; a person needs one of `allowed` in `org` (no role there: the org does
    not exist for them); API keys never manage people."""
    if actor.is_root:
        return
    if actor.is_key:
        raise Forbidden(f"API keys cannot {what}; sign in to the console as an owner")
    role = actor.role_in(org)
    if role is None:
        raise NotFound(f"unknown org {org!r}", "org")
    if role not in allowed:
        needed = " or ".join(allowed)
        raise Forbidden(f"your role in org {org!r} is {role}; to {what} you need {needed}")


def link_sets_password(invite: StoredInvite, roles: dict[str, str]) -> bool:
    """Whether accepting `invite` sets the password (else it confirms the one the person
    has). Root's links always set it; an owner's only for a person with no password who
    belongs to no other org (README: an owner cannot take over access to another org)."""
    from_root = not invite.created_by.startswith("user:")
    alone = set(roles) <= {invite.org}
    return from_root or (invite.user.password_hash is None and alone)


# --- inputs -------------------------------------------------------------------------------


def check_role(role: object) -> str:
    """One of owner, admin or member; InvalidInput on `role` otherwise."""
    if role not in ROLES:
        raise InvalidInput(f"invalid role {role!r}: use owner, admin or member", "role")
    assert isinstance(role, str)
    return role


def check_name(value: object) -> str:
    """A person's display name: trimmed, at most MAX_NAME printable characters."""
    if not isinstance(value, str):
        raise InvalidInput("name must be a string", "name")
    value = value.strip()
    if len(value) > MAX_NAME:
        raise InvalidInput(f"name is longer than {MAX_NAME} characters", "name")
    if any(_unprintable(c) for c in value):
        raise InvalidInput("name cannot contain control or invisible formatting characters", "name")
    return value


def _unprintable(c: str) -> bool:
    """Control characters, lone surrogates (not text: the database refuses them) and the
    bidirectional overrides that make a name display as something else."""
    code = ord(c)
    return (
        code < 32
        or 127 <= code < 160
        or 0xD800 <= code <= 0xDFFF
        or 0x202A <= code <= 0x202E
        or 0x2066 <= code <= 0x2069
    )


def possible_password(value: str) -> bool:
    """Whether some account could have `value` as its password (check_password's rules)."""
    try:
        credentials.check_password(value)
    except InvalidInput:
        return False
    return True


def clean_user_agent(value: str | None) -> str | None:
    """As recorded: bounded, printable (it is whatever the client sent)."""
    if not value:
        return None
    clean = "".join(c if 32 <= ord(c) < 127 or ord(c) > 159 else "?" for c in value)
    return clean[:MAX_USER_AGENT]
