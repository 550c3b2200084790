"""Plain records of people: users, their role in an org, invites and sessions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.keys.models import rfc3339

ROLES = ("owner", "admin", "member")
INVITE_PATH = "/console/invite/"


@dataclass(frozen=True)
class User:
    email: str
    name: str
    disabled: bool
    created_at: datetime
    last_sign_in_at: datetime | None
    has_password: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "name": self.name,
            "disabled": self.disabled,
            "created_at": rfc3339(self.created_at),
            "last_sign_in_at": rfc3339(self.last_sign_in_at),
            "has_password": self.has_password,
        }


@dataclass(frozen=True)
class Member:
    """A person's role in one org."""

    org: str
    email: str
    name: str
    role: str
    last_sign_in_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "name": self.name,
            "role": self.role,
            "last_sign_in_at": rfc3339(self.last_sign_in_at),
        }


@dataclass(frozen=True)
class Invite:
    """A one-time link for `member`; the token is shown once and stored only hashed."""

    member: Member
    token: str = field(repr=False)
    expires_at: datetime

    @property
    def path(self) -> str:
        return invite_path(self.token)


@dataclass(frozen=True)
class SessionInfo:
    """A live session: who, their roles (org slug -> role) now, and its CSRF token."""

    user: User
    roles: Mapping[str, str]
    csrf_token: str = field(repr=False)
    expires_at: datetime  # absolute; the idle limit may end it earlier


@dataclass(frozen=True)
class SignedIn:
    """A new session: `session_id` goes into the cookie and nowhere else."""

    session_id: str = field(repr=False)
    info: SessionInfo
    max_age: int  # seconds, for the cookie


def invite_path(token: str) -> str:
    """Where an invite link points, under the console's origin."""
    return INVITE_PATH + token


def invite_url(origin: str, token: str) -> str:
    """The full one-time link, e.g. https://keygate.example.com/console/invite/<token>."""
    return origin.rstrip("/") + invite_path(token)
