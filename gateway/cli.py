"""The `keygate` command: argument parsing and output; every rule lives in the service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

from gateway.config import Config, ConfigError, load_config
from gateway.keys.errors import ServiceError
from gateway.keys.models import Actor, ApiKey, AuditEntry, Org, rfc3339, utcnow
from gateway.keys.service import KEEP, KeyService, open_key_service
from gateway.units import parse_duration

EXIT_OK, EXIT_USER_ERROR, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 1."""


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _datetime_arg(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2030-01-31T00:00:00Z"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. a trailing Z for UTC")
    return value


def _json_object_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--metadata must be a JSON object") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--metadata must be a JSON object")
    return value


def _rate_limit_arg(text: str | None) -> str | None:
    """--rate-limit as the service takes it ("none": no limit); the service checks it."""
    return None if text is None or text.strip().lower() == "none" else text


def _common_options(default: Any) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", default=default,
        help="config file (default: $KEYGATE_CONFIG or config/keygate.yaml)",
    )
    common.add_argument(
        "--json", action="store_true", default=default, help="print machine-readable JSON"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    # The options are accepted before and after the command. Subcommands must not reset
    # them to their defaults (argparse would drop `keygate --config X check-config`'s X).
    common = _common_options(argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog="keygate", description="Keygate: an authenticating API-key gateway.",
        parents=[_common_options(None)],
    )
    parser.set_defaults(json=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the proxy and admin listeners")
    serve.add_argument("--workers", type=int, help="worker processes sharing the proxy port")
    sub.add_parser("dev", parents=[common], help="embedded Postgres + Redis + demo upstream")
    sub.add_parser("migrate", parents=[common], help="apply SQL migrations (idempotent)")
    sub.add_parser("check-config", parents=[common], help="validate the configuration")

    orgs = sub.add_parser("orgs", help="manage organisations").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create_org = orgs.add_parser("create", parents=[common], help="create an organisation")
    create_org.add_argument("slug")
    create_org.add_argument("--name")
    orgs.add_parser("list", parents=[common], help="list organisations")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = keys.add_parser("create", parents=[common], help="create a key (printed once)")
    create.add_argument("--org", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, dest="scopes", metavar="S")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=_duration_arg, metavar="DURATION")
    expiry.add_argument("--expires-at", type=_datetime_arg, metavar="ISO8601")
    create.add_argument("--env", choices=["live", "test"], default="live")
    create.add_argument("--metadata", type=_json_object_arg, metavar="JSON")
    create.add_argument(
        "--rate-limit", metavar="N/WINDOW",
        help="the key's own limit over all routes, e.g. 100/1m (window 1s to 365d)",
    )

    klist = keys.add_parser("list", parents=[common], help="list an org's keys, newest first")
    klist.add_argument("--org", required=True)
    klist.add_argument("--status", choices=["active", "revoked", "expired", "all"], default="all")
    klist.add_argument("--limit", type=int, help="show at most N keys")

    show = keys.add_parser("show", parents=[common], help="show one key")
    show.add_argument("key_id", metavar="KEY_ID")

    update = keys.add_parser(
        "update", parents=[common], help="change a key's name, scopes or rate limit"
    )
    update.add_argument("key_id", metavar="KEY_ID")
    update.add_argument("--name")
    update.add_argument("--scope", action="append", dest="scopes", metavar="S")
    update.add_argument(
        "--rate-limit", metavar="N/WINDOW|none",
        help="the key's own limit over all routes, e.g. 100/1m; none removes it",
    )

    revoke = keys.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.add_argument("--reason")

    roll = keys.add_parser(
        "roll", parents=[common], help="replace a key; the old one expires after --grace"
    )
    roll.add_argument("key_id", metavar="KEY_ID")
    roll.add_argument("--grace", type=_duration_arg, default=86400.0, metavar="DURATION")
    roll_expiry = roll.add_mutually_exclusive_group()
    roll_expiry.add_argument("--expires-in", type=_duration_arg, metavar="DURATION")
    roll_expiry.add_argument("--expires-at", type=_datetime_arg, metavar="ISO8601")

    audit = sub.add_parser("audit", parents=[common], help="show the audit log of an org")
    audit.add_argument("--org", required=True)
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--key", dest="key_id", metavar="KEY_ID")
    audit.add_argument("--action")
    return parser


def cli_actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(principal=f"cli:{user}")


class Output:
    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err

    def json(self, value: Any) -> None:
        json.dump(value, self.out, indent=2, sort_keys=False)
        self.out.write("\n")

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def table(
        self, headers: Sequence[str], rows: Iterator[Sequence[str]] | list[Sequence[str]]
    ) -> None:
        rows = [list(map(str, r)) for r in rows]
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(headers)
        ]
        self.line("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
        for r in rows:
            self.line("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _show_key(out: Output, key: ApiKey) -> None:
    data = key.to_json(utcnow())
    width = max(len(k) for k in data)
    for field, value in data.items():
        if field == "rate_limit" and key.rate_limit is not None:
            value = f"{key.rate_limit} ({key.rate_limit.requests} per {key.rate_limit.per}s)"
        elif isinstance(value, list):
            value = " ".join(value) or "-"
        elif isinstance(value, dict):
            value = json.dumps(value) if value else "-"
        out.line(f"{field.ljust(width)}  {'-' if value is None else value}")


def _print_secret(out: Output, key: ApiKey, secret: str, verb: str) -> None:
    out.line(
        f"{verb} key {key.display_prefix} in org {key.org} (scopes: {' '.join(key.scopes) or '-'})"
    )
    out.line()
    out.line(f"    {secret}")
    out.line()
    out.err.write("Copy this key now: it is shown only once and cannot be retrieved again.\n")


async def _cmd_orgs(args: argparse.Namespace, svc: KeyService, out: Output) -> None:
    actor = cli_actor()
    if args.action == "create":
        org = await svc.create_org(actor, args.slug, args.name)
        out.json(org.to_json()) if out.as_json else out.line(f"Created org {org.slug} ({org.name})")
        return
    orgs: list[Org] = await svc.list_orgs(actor)
    if out.as_json:
        out.json({"items": [o.to_json() for o in orgs]})
    else:
        out.table(
            ["SLUG", "NAME", "CREATED"],
            [[o.slug, o.name, rfc3339(o.created_at) or ""] for o in orgs],
        )


async def _all_keys(svc: KeyService, org: str, status: str, limit: int | None) -> list[ApiKey]:
    items: list[ApiKey] = []
    cursor = None
    while True:
        page = await svc.list_keys(cli_actor(), org, status=status, limit=500, cursor=cursor)
        items.extend(page.items)
        if page.next_cursor is None or (limit is not None and len(items) >= limit):
            return items[:limit] if limit is not None else items
        cursor = page.next_cursor


async def _cmd_keys(args: argparse.Namespace, svc: KeyService, out: Output) -> None:
    actor, now = cli_actor(), utcnow()
    if args.action == "create":
        created = await svc.create_key(
            actor, args.org, args.name, args.scopes, env=args.env,
            expires_in=args.expires_in, expires_at=args.expires_at, metadata=args.metadata,
            rate_limit=_rate_limit_arg(args.rate_limit),
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
            [[k.display_prefix, k.name, k.status(now), k.env, " ".join(k.scopes) or "-",
              _short(k.created_at), _short(k.expires_at), _short(k.last_used_at)] for k in keys],
        )
    elif args.action == "show":
        key = await svc.get_key(actor, args.key_id)
        out.json(key.to_json(now)) if out.as_json else _show_key(out, key)
    elif args.action == "update":
        key = await svc.update_key(
            actor, args.key_id, name=args.name, scopes=args.scopes,
            rate_limit=KEEP if args.rate_limit is None else _rate_limit_arg(args.rate_limit),
        )
        out.json(key.to_json(now)) if out.as_json else _show_key(out, key)
    elif args.action == "revoke":
        revoked = await svc.revoke_key(actor, args.key_id, reason=args.reason)
        key = revoked.key
        if out.as_json:
            out.json(key.to_json(now))
        elif revoked.already:  # idempotent: exit 0, and say that nothing changed
            out.line(f"Key {key.display_prefix} was already revoked at "
                     f"{rfc3339(key.revoked_at)} by {key.revoked_by}; nothing changed")
        else:
            out.line(f"Revoked key {key.display_prefix}")
    elif args.action == "roll":
        rolled = await svc.roll_key(
            actor,
            args.key_id,
            grace=args.grace,
            expires_in=args.expires_in,
            expires_at=args.expires_at,
        )
        if out.as_json:
            out.json({"key": rolled.key.to_json(now), "secret": rolled.secret,
                      "previous": rolled.previous.to_json(now)})
            out.err.write("Store the secret now: it is shown only once.\n")
        else:
            _print_secret(out, rolled.key, rolled.secret, "Rolled to new")
            old = rolled.previous
            until = "now (revoked)" if old.revoked_at else rfc3339(old.expires_at)
            out.line(f"The previous key {old.display_prefix} stays valid until {until}.")


async def _cmd_audit(args: argparse.Namespace, svc: KeyService, out: Output) -> None:
    page = await svc.list_audit(
        cli_actor(), args.org, key_id=args.key_id, action=args.action, limit=args.limit
    )
    entries: list[AuditEntry] = page.items
    if out.as_json:
        out.json({"items": [e.to_json() for e in entries], "next_cursor": page.next_cursor})
        return
    out.table(
        ["TIME", "ACTION", "KEY", "PRINCIPAL", "CHANGE"],
        [
            [rfc3339(e.at) or "", e.action, e.key_id or "-", e.principal, _change(e)]
            for e in entries
        ],
    )


def _change(entry: AuditEntry) -> str:
    if entry.old_scopes is not None or entry.new_scopes is not None:
        old = " ".join(entry.old_scopes or ()) or "-"
        new = " ".join(entry.new_scopes or ()) or "-"
        return f"scopes {old} -> {new}"
    return ", ".join(
        f"{k}={_detail(v)}" for k, v in entry.details.items()
        if v is not None or k.endswith("rate_limit")  # "none" is the change itself
    )


def _detail(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict) and set(value) == {"requests", "per"}:  # a rate limit
        return f"{value['requests']}/{value['per']}"
    return str(value)


def _short(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


async def _cmd_migrate(config: Config, out: Output) -> None:
    from gateway.store.db import Database
    from gateway.store.migrate import migrate

    db = Database(config.database_url, timeout=config.server.store_timeout)
    try:
        applied = await migrate(db)
    finally:
        await db.close()
    if out.as_json:
        out.json({"applied": [f"{m.version:04d}_{m.name}" for m in applied]})
    elif applied:
        for m in applied:
            out.line(f"applied {m.version:04d}_{m.name}")
    else:
        out.line("database is up to date")


ServiceCommand = Callable[[argparse.Namespace, KeyService, Output], Awaitable[None]]
_SERVICE_COMMANDS: dict[str, ServiceCommand] = {
    "orgs": _cmd_orgs,
    "keys": _cmd_keys,
    "audit": _cmd_audit,
}


async def _with_service(
    cmd: ServiceCommand, args: argparse.Namespace, config: Config, out: Output
) -> None:
    async with open_key_service(config) as svc:
        await cmd(args, svc, out)


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Entry point of the console script; returns the process exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)  # usage errors and --help go to out/err too
    except SystemExit as exc:
        return int(exc.code or 0)
    output = Output(args.json, out, err)
    try:
        config = load_config(args.config)
        if args.command == "check-config":
            out.write("ok\n")
            return EXIT_OK
        if args.command == "serve":
            from gateway.server import serve

            return serve(config, workers=args.workers)
        if args.command == "dev":
            from gateway.dev import run_dev

            return run_dev(config_path=args.config)
        if args.command == "migrate":
            asyncio.run(_cmd_migrate(config, output))
        else:
            asyncio.run(_with_service(_SERVICE_COMMANDS[args.command], args, config, output))
    except ConfigError as exc:
        if args.command == "check-config":
            for problem in exc.problems:
                err.write(f"{exc.source}: {problem}\n")
        else:
            err.write(f"keygate: config error: {exc.source}: {exc.problems[0]}\n")
            if len(exc.problems) > 1:
                err.write(f"keygate: ({len(exc.problems) - 1} more; run keygate check-config)\n")
        return EXIT_USER_ERROR
    except (ServiceError, UserError) as exc:
        err.write(f"keygate: error: {exc}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
