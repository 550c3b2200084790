"""The `keygate` command: argument parsing and output; every rule lives in the service.

One module per command group (orgs, keys, verify, audit, routes, check_config,
processes, users, tokens); each registers its parsers with a `run(args, out) -> exit code` default.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import TextIO

from gateway.config import ConfigError
from gateway.keys.errors import ServiceError

from . import audit, check_config, keys, orgs, processes, routes, tokens, users
from .args import common_options
from .output import EXIT_OK, EXIT_USAGE, EXIT_USER_ERROR, Output, UserError

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_USER_ERROR", "UserError", "build_parser", "main"]

Run = Callable[[argparse.Namespace, Output], int]


def version() -> str:
    """The installed package's version (package metadata, as pip sees it)."""
    try:
        return metadata.version("keygate")
    except metadata.PackageNotFoundError:
        return "unknown (not installed; pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    # The options are accepted before and after the command. Subcommands must not reset
    # them to their defaults (argparse would drop `keygate --config X check-config`'s X).
    common = common_options(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="keygate",
        description="Keygate: an authenticating API-key gateway.",
        epilog="Exit status: 0 ok, 1 a problem to fix (one line on stderr), 2 usage error. "
        "`keygate COMMAND --help` describes each command.",
        parents=[common_options(None)],
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"keygate {version()}",
        help="print the version and exit",
    )
    parser.set_defaults(json=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    processes.register(sub, common)
    check_config.register(sub, common)
    orgs.register(sub, common)
    keys.register(sub, common)
    audit.register(sub, common)
    routes.register(sub, common)
    users.register(sub, common)
    tokens.register(sub, common)
    return parser


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
    run: Run = args.run
    try:
        return run(args, output)
    except ConfigError as exc:
        err.write(f"keygate: config error: {exc.source}: {exc.problems[0]}\n")
        if len(exc.problems) > 1:
            err.write(f"keygate: ({len(exc.problems) - 1} more; run keygate check-config)\n")
        return EXIT_USER_ERROR
    except (ServiceError, UserError) as exc:
        err.write(f"keygate: error: {exc}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
