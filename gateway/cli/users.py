"""`keygate users invite|list|disable` and `keygate sessions revoke --user` (SPEC §6).

The CLI acts as root (`cli:<os user>`): it can invite the first owner of an org, and its
links may set a password in every case (gateway/people/service.py says why owners' may not).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.keys.models import rfc3339
from gateway.people.models import ROLES, invite_url
from gateway.people.service import PeopleService, open_people_service, public_origin

from .context import command_config
from .output import Output, cli_actor, short_time

PeopleCommand = Callable[[argparse.Namespace, PeopleService, str, Output], Awaitable[None]]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    users = sub.add_parser(
        "users",
        help="manage people of the console",
        description="Invite people to an org's console, list and disable them.",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    invite = users.add_parser(
        "invite", parents=[common], help="add a person to an org; prints a one-time sign-in link"
    )
    invite.add_argument("email", metavar="EMAIL", help="the person's email address")
    invite.add_argument("--org", required=True, metavar="SLUG", help="the organisation")
    invite.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="owner: members and keys; admin: keys; member: no key pages",
    )
    invite.add_argument("--name", metavar="TEXT", help="the person's name")
    users.add_parser("list", parents=[common], help="list people and their roles")
    disable = users.add_parser(
        "disable", parents=[common], help="disable a person and end their sessions"
    )
    disable.add_argument("email", metavar="EMAIL", help="the person's email address")
    for parser in users.choices.values():
        parser.set_defaults(run=lambda args, out: run_people(_users, args, out))

    sessions = sub.add_parser(
        "sessions", help="console sessions", description="End people's console sessions."
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    revoke = sessions.add_parser(
        "revoke", parents=[common], help="end every session of a person (within 1 s)"
    )
    revoke.add_argument("--user", required=True, metavar="EMAIL", help="whose sessions")
    revoke.set_defaults(run=lambda args, out: run_people(_sessions, args, out))


def run_people(cmd: PeopleCommand, args: argparse.Namespace, out: Output) -> int:
    """Load the config, open the people service and run `cmd` against it."""
    config = command_config(args)

    async def run() -> None:
        async with open_people_service(config) as people:
            await cmd(args, people, public_origin(config), out)

    asyncio.run(run())
    return 0


async def _users(args: argparse.Namespace, people: PeopleService, origin: str, out: Output) -> None:
    actor = cli_actor()
    if args.action == "invite":
        invite = await people.invite(actor, args.email, args.org, args.role, name=args.name)
        link = invite_url(origin, invite.token)
        if out.as_json:
            out.json(
                {
                    "member": invite.member.to_json(),
                    "org": invite.member.org,
                    "invite_url": link,
                    "expires_at": rfc3339(invite.expires_at),
                }
            )
            return
        member = invite.member
        out.line(f"Invited {member.email} to {member.org} as {member.role}.")
        out.line(f"One-time sign-in link (valid until {short_time(invite.expires_at)} UTC):\n")
        out.line(f"    {link}\n")
        out.line("Send it to them; it is not shown again.")
    elif args.action == "list":
        users = await people.list_users(actor)
        if out.as_json:
            out.json({"items": [{**u.to_json(), "orgs": _orgs_json(roles)} for u, roles in users]})
            return
        out.table(
            ["EMAIL", "NAME", "STATUS", "ROLES", "LAST SIGN-IN"],
            [
                [
                    u.email,
                    u.name or "-",
                    "disabled" if u.disabled else "active",
                    ", ".join(f"{o}:{r}" for o, r in roles.items()) or "-",
                    short_time(u.last_sign_in_at),
                ]
                for u, roles in users
            ],
        )
    else:
        user = await people.disable_user(actor, args.email)
        if out.as_json:
            out.json(user.to_json())
        else:
            out.line(f"Disabled {user.email}; their sessions have ended.")


async def _sessions(
    args: argparse.Namespace, people: PeopleService, _origin: str, out: Output
) -> None:
    ended = await people.revoke_sessions(cli_actor(), args.user)
    if out.as_json:
        out.json({"user": args.user.strip().lower(), "revoked": ended})
    else:
        out.line(
            f"Ended {ended} session{'' if ended == 1 else 's'} of {args.user.strip().lower()}."
        )


def _orgs_json(roles: dict[str, str]) -> list[dict[str, str]]:
    return [{"slug": org, "role": role} for org, role in roles.items()]
