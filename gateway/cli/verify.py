"""`keygate keys verify KEY`: is this string a working key? Never prints the secret.

Offline first, with the gateway's own parser (shape, prefix, checksum: a typo is caught
without a store), then online: the stored key it names, whether the secret matches, and
its status.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from gateway.keys.format import MalformedKey, ParsedKey, parse_key
from gateway.keys.models import rfc3339, utcnow
from gateway.keys.service import open_key_service

from .context import command_config
from .output import EXIT_OK, EXIT_USER_ERROR, Output, UserError, cli_actor

_REASONS = {  # MalformedKey reasons, said for an operator
    "wrong length": "it has the wrong length for a key",
    "unknown prefix": "its prefix is not one of this gateway's (keys.prefixes)",
    "not base62": "it has characters a key never contains",
    "bad checksum": "its checksum does not match (a typo, or a truncated copy)",
}


def register(keys: Any, common: argparse.ArgumentParser) -> None:
    verify = keys.add_parser(
        "verify",
        parents=[common],
        help="check a full key: format and checksum offline, then its status online",
        description="Check a full key: format and checksum without any store, then whether "
        "it exists, its secret matches and it is active. Prints the key's id, "
        "never its secret. Exit 1 when the key would not authenticate.",
    )
    verify.add_argument(
        "key",
        metavar="KEY",
        help="the full key; - reads it from stdin (keeps it out of shell history)",
    )
    verify.set_defaults(run=verify_key)


def verify_key(args: argparse.Namespace, out: Output) -> int:
    text = (sys.stdin.readline() if args.key == "-" else args.key).strip()
    config = command_config(args)
    try:
        parsed = parse_key(text, config.keys.prefixes)
    except MalformedKey as exc:
        reason = _REASONS.get(str(exc), str(exc))
        raise UserError(f"not a valid key: {reason}") from None
    report: dict[str, Any] = {
        "id": parsed.key_id,
        "display_prefix": parsed.display_prefix,
        "env": parsed.env,
        "format": "ok",
        "checksum": "ok",
    }
    problem = asyncio.run(_online(config, parsed, report))
    report["valid"] = problem is None
    if out.as_json:
        out.json(report)
    else:
        out.fields(
            {
                k: " ".join(v) if isinstance(v, list) else v
                for k, v in report.items()
                if k != "valid"
            }
        )
    if problem is not None:
        out.err.write(f"keygate: error: key {parsed.display_prefix} {problem}\n")
        return EXIT_USER_ERROR
    return EXIT_OK


async def _online(config: Any, parsed: ParsedKey, report: dict[str, Any]) -> str | None:
    """Fill in what the stores say; return what is wrong, or None for a working key."""
    async with open_key_service(config) as svc:
        found = await svc.find_presented_key(cli_actor(), parsed)
    if found is None:
        report["stored"] = "no"
        return "is not stored in this gateway's database (check --config)"
    key, secret_ok = found
    status = key.status(utcnow())
    report.update(
        stored="yes",
        secret="ok" if secret_ok else "mismatch",
        status=status,
        org=key.org,
        name=key.name,
        scopes=list(key.scopes),
        expires_at=rfc3339(key.expires_at),
    )
    if not secret_ok:
        return "exists but this secret is not its secret (a forged or altered key)"
    if status != "active":
        return f"is {status}"
    return None
