"""`keygate orgs create|list|show`."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.keys.models import Org, rfc3339, utcnow
from gateway.keys.service import KeyService

from .context import run_service
from .output import Output, UserError, cli_actor

STATUSES = ("active", "revoked", "expired")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    orgs = sub.add_parser(
        "orgs", help="manage organisations", description="Create, list and show organisations."
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    create = orgs.add_parser("create", parents=[common], help="create an organisation")
    create.add_argument(
        "slug", metavar="SLUG", help="2-63 characters: a-z, 0-9 and -, starting with a letter"
    )
    create.add_argument("--name", metavar="TEXT", help="display name (default: the slug)")
    orgs.add_parser("list", parents=[common], help="list organisations")
    show = orgs.add_parser(
        "show", parents=[common], help="show one organisation and how many keys it has"
    )
    show.add_argument("slug", metavar="SLUG", help="the organisation's slug")
    for parser in orgs.choices.values():
        parser.set_defaults(run=lambda args, out: run_service(_run, args, out))


async def _run(args: argparse.Namespace, svc: KeyService, out: Output) -> None:
    actor = cli_actor()
    if args.action == "create":
        org = await svc.create_org(actor, args.slug, args.name)
        out.json(org.to_json()) if out.as_json else out.line(f"Created org {org.slug} ({org.name})")
        return
    orgs: list[Org] = await svc.list_orgs(actor)
    if args.action == "show":
        await _show(args.slug, orgs, svc, out)
    elif out.as_json:
        out.json({"items": [o.to_json() for o in orgs]})
    else:
        out.table(
            ["SLUG", "NAME", "CREATED"],
            [[o.slug, o.name, rfc3339(o.created_at) or ""] for o in orgs],
        )


async def _show(slug: str, orgs: list[Org], svc: KeyService, out: Output) -> None:
    org = next((o for o in orgs if o.slug == slug), None)
    if org is None:
        raise UserError(f"unknown org {slug!r}; `keygate orgs list` shows them")
    counts = dict.fromkeys(STATUSES, 0)
    now, cursor = utcnow(), None
    while True:
        page = await svc.list_keys(cli_actor(), slug, status="all", limit=500, cursor=cursor)
        for key in page.items:
            counts[key.status(now)] += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    if out.as_json:
        out.json({**org.to_json(), "keys": counts})
        return
    out.fields(
        {
            "slug": org.slug,
            "name": org.name,
            "created_at": rfc3339(org.created_at),
            "keys": ", ".join(f"{n} {s}" for s, n in counts.items()),
        }
    )
