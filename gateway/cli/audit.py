"""`keygate audit`: an org's audit log, newest first, one page at a time."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.keys.models import AuditEntry, rfc3339
from gateway.keys.service import KeyService

from .context import run_service
from .output import Output, cli_actor


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    audit = sub.add_parser(
        "audit",
        parents=[common],
        help="show the audit log of an org",
        description="Show an org's audit log, newest first. When more entries remain, the "
        "last line (or next_cursor in --json) gives the --cursor of the next page.",
    )
    audit.add_argument("--org", required=True, metavar="SLUG", help="the organisation")
    audit.add_argument(
        "--limit", type=int, default=50, metavar="N", help="entries per page (default: 50)"
    )
    audit.add_argument(
        "--cursor", metavar="C", help="continue after a previous page (its next_cursor)"
    )
    audit.add_argument("--key", dest="key_id", metavar="KEY_ID", help="only entries about this key")
    audit.add_argument(
        "--action", metavar="ACTION", help="only this action, e.g. create, update, revoke, roll"
    )
    audit.set_defaults(run=lambda args, out: run_service(_run, args, out))


async def _run(args: argparse.Namespace, svc: KeyService, out: Output) -> None:
    page = await svc.list_audit(
        cli_actor(),
        args.org,
        key_id=args.key_id,
        action=args.action,
        limit=args.limit,
        cursor=args.cursor,
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
    if page.next_cursor is not None:
        out.err.write(f"More entries: add --cursor {page.next_cursor}\n")


def _change(entry: AuditEntry) -> str:
    if entry.old_scopes is not None or entry.new_scopes is not None:
        old = " ".join(entry.old_scopes or ()) or "-"
        new = " ".join(entry.new_scopes or ()) or "-"
        return f"scopes {old} -> {new}"
    return ", ".join(
        f"{k}={_detail(v)}"
        for k, v in entry.details.items()
        if v is not None or k.endswith("rate_limit")  # "none" is the change itself
    )


def _detail(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict) and set(value) == {"requests", "per"}:  # a rate limit
        return f"{value['requests']}/{value['per']}"
    return str(value)
