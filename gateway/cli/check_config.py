"""`keygate check-config`: validate the configuration, reporting every problem; with
`--connect`, also check that the stores answer and the schema is current."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from gateway.config import Config, ConfigError, load_config

from .output import EXIT_OK, EXIT_USER_ERROR, Output

if TYPE_CHECKING:
    from gateway.store.readiness import Check


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    check = sub.add_parser(
        "check-config",
        parents=[common],
        help="validate the configuration",
        description="Validate the configuration file and environment overrides; every "
        "problem is printed with its field path and line.",
    )
    check.add_argument(
        "--connect",
        action="store_true",
        help="also check that PostgreSQL and Redis answer and every migration is applied",
    )
    check.set_defaults(run=check_config)


def check_config(args: argparse.Namespace, out: Output) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _invalid(exc, out)
    checks = asyncio.run(_connect(config)) if args.connect else []
    failed = [c.name for c in checks if not c.ok]
    if out.as_json:
        out.json(
            {
                "ok": not failed,
                "source": config.source,
                "errors": [],
                "checks": [c.to_json() for c in checks],
            }
        )
    elif not checks:
        out.line("ok")
    else:
        out.line(f"config: ok ({config.source})")
        for check in checks:
            out.line(f"{check.name}: {check.detail}")
    if failed:
        out.err.write(
            f"keygate: error: the configuration is valid, but {', '.join(failed)}"
            f" {'is' if len(failed) == 1 else 'are'} not ready\n"
        )
        return EXIT_USER_ERROR
    return EXIT_OK


def _invalid(exc: ConfigError, out: Output) -> int:
    if out.as_json:
        out.json(
            {
                "ok": False,
                "source": exc.source,
                "errors": [
                    {"path": p.path or None, "line": p.line, "message": p.message}
                    for p in exc.problems
                ],
                "checks": [],
            }
        )
        count = len(exc.problems)
        out.err.write(
            f"keygate: error: {exc.source}: {count} "
            f"problem{'s' if count > 1 else ''} in the configuration\n"
        )
    else:
        for problem in exc.problems:
            out.err.write(f"{exc.source}: {problem}\n")
    return EXIT_USER_ERROR


async def _connect(config: Config) -> list[Check]:
    from gateway.store.readiness import check_stores  # the stores' clients load only here

    return await check_stores(config.database_url, config.redis_url, config.server.store_timeout)
