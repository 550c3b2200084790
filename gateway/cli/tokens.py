"""`keygate tokens revoke --org SLUG --subject SUB [--issuer ISS]` (SPEC §6, §11).

The CLI acts as root (`cli:<os user>`); the rules and the audit entry are the token
service's (gateway/tokens/service.py), shared with the admin API.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from gateway.tokens.service import open_token_service

from .context import command_config
from .output import Output, cli_actor


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    tokens = sub.add_parser(
        "tokens",
        help="user tokens (JWTs from the identity provider)",
        description="Revoke a person's user tokens for an org.",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    revoke = tokens.add_parser(
        "revoke",
        parents=[common],
        help="refuse a subject's tokens for an org issued until now (every gateway, within 1 s)",
        description="Refuse SUB's user tokens for the org that were issued (iat) until now, "
        "with 401 revoked_token on every gateway within a second; tokens issued later "
        "work again. Audited in the org.",
    )
    revoke.add_argument("--org", required=True, metavar="SLUG", help="the organisation")
    revoke.add_argument(
        "--subject", required=True, metavar="SUB", help="the tokens' sub claim (the person)"
    )
    revoke.add_argument(
        "--issuer",
        metavar="ISS",
        help="only tokens of this configured issuer (default: of every issuer)",
    )
    revoke.set_defaults(run=_run_revoke)


def _run_revoke(args: argparse.Namespace, out: Output) -> int:
    config = command_config(args)

    async def run() -> None:
        async with open_token_service(config) as service:
            revoked = await service.revoke(cli_actor(), args.org, args.subject, args.issuer)
        for warning in revoked.warnings:
            out.err.write(f"keygate: warning: {warning}\n")
        if out.as_json:
            out.json(revoked.to_json())
            return
        r = revoked.to_json()
        source = f" from {r['issuer']}" if r["issuer"] else ""
        out.line(
            f"Revoked the user tokens of {r['subject']}{source} for org {r['org']} "
            f"issued until {r['revoked_before']}."
        )

    asyncio.run(run())
    return 0
