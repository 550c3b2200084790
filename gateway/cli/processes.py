"""The long-running commands: `keygate serve`, `keygate dev` and `keygate migrate`."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from gateway.config import Config, load_config

from .context import command_config
from .output import Output, UserError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the proxy and admin listeners",
        description="Run the gateway: the proxy and admin listeners of the configuration.",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes sharing the proxy port (default: server.workers)",
    )
    serve.set_defaults(run=_serve)

    dev = sub.add_parser(
        "dev",
        help="embedded Postgres + Redis + demo upstream",
        description="Run the whole stack on this machine: embedded PostgreSQL and Redis "
        "(data in .keygate/, on the same ports as last time when they are free; "
        "see .keygate/dev.json), the demo upstream and the gateway. Ctrl-C stops "
        "everything. While it runs, `keygate` commands started from this folder "
        "without --config or KEYGATE_* settings use its stores.",
    )
    dev.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="config file to serve (default: config/dev.yaml); its database and Redis "
        "settings are replaced by the embedded ones",
    )
    dev.add_argument(
        "--proxy-port",
        type=_port_arg,
        metavar="PORT",
        help="proxy listener port (default: the config's listen.proxy; 8080 in config/dev.yaml)",
    )
    dev.add_argument(
        "--admin-port",
        type=_port_arg,
        metavar="PORT",
        help="admin listener port (default: the config's listen.admin; 8081 in config/dev.yaml)",
    )
    dev.add_argument(
        "--demo-port",
        type=_port_arg,
        metavar="PORT",
        help="demo upstream port (default: the port of upstream `demo`; 9000 in config/dev.yaml)",
    )
    dev.set_defaults(run=_dev)

    migrate = sub.add_parser(
        "migrate",
        parents=[common],
        help="apply SQL migrations (idempotent)",
        description="Apply the SQL migrations the database lacks (safe to run again).",
    )
    migrate.set_defaults(run=_migrate)


def _serve(args: argparse.Namespace, out: Output) -> int:
    from gateway.server import serve

    return serve(load_config(args.config), workers=args.workers)


def _port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _dev(args: argparse.Namespace, out: Output) -> int:
    from gateway.dev import DevError, DevOptions, run_dev

    options = DevOptions(args.config, args.proxy_port, args.admin_port, args.demo_port)
    try:
        return run_dev(options)
    except DevError as exc:
        raise UserError(str(exc)) from None


def _migrate(args: argparse.Namespace, out: Output) -> int:
    asyncio.run(_apply_migrations(command_config(args), out))
    return 0


async def _apply_migrations(config: Config, out: Output) -> None:
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
