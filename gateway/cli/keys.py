"""`keygate keys …`: create, list, show, update, revoke, roll (and verify, in verify.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.keys.models import ApiKey, rfc3339, utcnow
from gateway.keys.service import KEEP, KeyService

from . import verify
from .args import datetime_arg, duration_arg, json_object_arg, rate_limit_arg
from .context import run_service
from .output import Output, UserError, cli_actor, short_time

KEY_ID_HELP = "the key's id (8 characters) or its display prefix, e.g. kg_live_a1B2c3D4"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser(
        "keys", help="manage API keys", description="Create, inspect and retire API keys."
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    create = keys.add_parser("create", parents=[common], help="create a key (printed once)")
    create.add_argument("--org", required=True, metavar="SLUG", help="the key's organisation")
    create.add_argument("--name", required=True, metavar="TEXT", help="what the key is for")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        dest="scopes",
        metavar="S",
        help="a scope the key grants; repeat for several",
    )
    _expiry_options(create, "no expiry")
    create.add_argument(
        "--env",
        choices=["live", "test"],
        default="live",
        help="live or test: sets the key's prefix (default: live)",
    )
    create.add_argument(
        "--metadata",
        type=json_object_arg,
        metavar="JSON",
        help='a JSON object stored with the key, e.g. \'{"team": "billing"}\'',
    )
    create.add_argument(
        "--rate-limit",
        metavar="N/WINDOW",
        help="the key's own limit over all routes, e.g. 100/1m (window 1s to 365d)",
    )

    klist = keys.add_parser("list", parents=[common], help="list an org's keys, newest first")
    klist.add_argument("--org", required=True, metavar="SLUG", help="the organisation")
    klist.add_argument(
        "--status",
        choices=["active", "revoked", "expired", "all"],
        default="all",
        help="only keys in this state (default: all)",
    )
    klist.add_argument("--limit", type=int, metavar="N", help="show at most N keys")

    show = keys.add_parser("show", parents=[common], help="show one key")
    show.add_argument("key_id", metavar="KEY_ID", help=KEY_ID_HELP)

    update = keys.add_parser(
        "update", parents=[common], help="change a key's name, scopes or rate limit"
    )
    update.add_argument("key_id", metavar="KEY_ID", help=KEY_ID_HELP)
    update.add_argument("--name", metavar="TEXT", help="the new name")
    update.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        metavar="S",
        help="the new scopes (replace the old ones); repeat for several",
    )
    update.add_argument(
        "--rate-limit",
        metavar="N/WINDOW|none",
        help="the key's own limit over all routes, e.g. 100/1m; none removes it",
    )

    revoke = keys.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("key_id", metavar="KEY_ID", help=KEY_ID_HELP)
    revoke.add_argument("--reason", metavar="TEXT", help="why, kept in the key and the audit log")

    roll = keys.add_parser(
        "roll", parents=[common], help="replace a key; the old one expires after --grace"
    )
    roll.add_argument("key_id", metavar="KEY_ID", help=KEY_ID_HELP)
    roll.add_argument(
        "--grace",
        type=duration_arg,
        default=86400.0,
        metavar="DURATION",
        help="how long the old key stays valid, e.g. 1h (default: 24h; never past its own expiry)",
    )
    _expiry_options(roll, "the old key's lifetime, counted from now")

    for parser in keys.choices.values():
        parser.set_defaults(run=lambda args, out: run_service(_run, args, out))
    verify.register(keys, common)


def _expiry_options(parser: argparse.ArgumentParser, default: str) -> None:
    expiry = parser.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires-in",
        type=duration_arg,
        metavar="DURATION",
        help=f"expire after this long, e.g. 30d or 12h (default: {default})",
    )
    expiry.add_argument(
        "--expires-at",
        type=datetime_arg,
        metavar="ISO8601",
        help="expire at this time, e.g. 2030-01-31T00:00:00Z",
    )


def show_key(out: Output, key: ApiKey) -> None:
    """A key as aligned `field  value` lines (the fields of its JSON form)."""
    data = key.to_json(utcnow())
    for field, value in data.items():
        if field == "rate_limit" and key.rate_limit is not None:
            value = f"{key.rate_limit} ({key.rate_limit.requests} per {key.rate_limit.per}s)"
        elif isinstance(value, list):
            value = " ".join(value) or "-"
        elif isinstance(value, dict):
            value = json.dumps(value) if value else "-"
        data[field] = value
    out.fields(data)


def _print_secret(out: Output, key: ApiKey, secret: str, verb: str) -> None:
    out.line(
        f"{verb} key {key.display_prefix} in org {key.org} (scopes: {' '.join(key.scopes) or '-'})"
    )
    out.line()
    out.line(f"    {secret}")
    out.line()
    out.err.write("Copy this key now: it is shown only once and cannot be retrieved again.\n")


async def _all_keys(svc: KeyService, org: str, status: str, limit: int | None) -> list[ApiKey]:
    items: list[ApiKey] = []
    cursor = None
    while True:
        page = await svc.list_keys(cli_actor(), org, status=status, limit=500, cursor=cursor)
        items.extend(page.items)
        if page.next_cursor is None or (limit is not None and len(items) >= limit):
            return items[:limit] if limit is not None else items
        cursor = page.next_cursor


async def _run(args: argparse.Namespace, svc: KeyService, out: Output) -> None:
    actor, now = cli_actor(), utcnow()
    if args.action == "create":
        created = await svc.create_key(
            actor,
            args.org,
            args.name,
            args.scopes,
            env=args.env,
            expires_in=args.expires_in,
            expires_at=args.expires_at,
            metadata=args.metadata,
            rate_limit=rate_limit_arg(args.rate_limit),
        )
        if out.as_json:
            out.json({"key": created.key.to_json(now), "secret": created.secret})
            out.err.write("Store the secret now: it is shown only once.\n")
        else:
            _print_secret(out, created.key, created.secret, "Created")
    elif args.action == "list":
        if args.limit is not None and args.limit < 1:
            raise UserError("--limit must be at least 1")
        keys = await _all_keys(svc, args.org, args.status, args.limit)
        if out.as_json:
            out.json({"items": [k.to_json(now) for k in keys]})
            return
        out.table(
            ["KEY", "NAME", "STATUS", "ENV", "SCOPES", "CREATED", "EXPIRES", "LAST USED"],
            [
                [
                    k.display_prefix,
                    k.name,
                    k.status(now),
                    k.env,
                    " ".join(k.scopes) or "-",
                    short_time(k.created_at),
                    short_time(k.expires_at),
                    short_time(k.last_used_at),
                ]
                for k in keys
            ],
        )
    elif args.action == "show":
        key = await svc.get_key(actor, args.key_id)
        out.json(key.to_json(now)) if out.as_json else show_key(out, key)
    elif args.action == "update":
        updated = await svc.update_key(
            actor,
            args.key_id,
            name=args.name,
            scopes=args.scopes,
            rate_limit=KEEP if args.rate_limit is None else rate_limit_arg(args.rate_limit),
        )
        out.json(updated.key.to_json(now)) if out.as_json else show_key(out, updated.key)
        _warn(out, updated.warnings)
    elif args.action == "revoke":
        revoked = await svc.revoke_key(actor, args.key_id, reason=args.reason)
        key = revoked.key
        if out.as_json:
            out.json(key.to_json(now))
        elif revoked.already:  # idempotent: exit 0, and say that nothing changed
            out.line(
                f"Key {key.display_prefix} was already revoked at "
                f"{rfc3339(key.revoked_at)} by {key.revoked_by}; nothing changed"
            )
        else:
            out.line(f"Revoked key {key.display_prefix}")
        _warn(out, revoked.warnings)
    elif args.action == "roll":
        rolled = await svc.roll_key(
            actor,
            args.key_id,
            grace=args.grace,
            expires_in=args.expires_in,
            expires_at=args.expires_at,
        )
        if out.as_json:
            out.json(
                {
                    "key": rolled.key.to_json(now),
                    "secret": rolled.secret,
                    "previous": rolled.previous.to_json(now),
                }
            )
            out.err.write("Store the secret now: it is shown only once.\n")
        else:
            _print_secret(out, rolled.key, rolled.secret, "Rolled to new")
            old = rolled.previous
            until = "now (revoked)" if old.revoked_at else rfc3339(old.expires_at)
            out.line(f"The previous key {old.display_prefix} stays valid until {until}.")
        _warn(out, rolled.warnings)


def _warn(out: Output, warnings: tuple[str, ...]) -> None:
    """What did not go as usual although the change is durable (exit status stays 0)."""
    for warning in warnings:
        out.err.write(f"keygate: warning: {warning}\n")
