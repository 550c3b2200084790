"""How a command finds its configuration and stores, and runs against the key service."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from gateway.config import Config, load_config
from gateway.dev_state import dev_environment
from gateway.keys.service import KeyService, open_key_service

from .output import Output

ServiceCommand = Callable[[argparse.Namespace, KeyService, Output], Awaitable[None]]


def command_config(args: argparse.Namespace) -> Config:
    """--config, $KEYGATE_CONFIG or config/keygate.yaml; else a `keygate dev` running
    from this folder (so the commands `keygate dev` prints work as printed); else the
    built-in defaults."""
    explicit: str | None = args.config
    found = dev_environment(explicit)
    if found is None:
        return load_config(explicit)
    return load_config(found.config, found.env)


def run_service(cmd: ServiceCommand, args: argparse.Namespace, out: Output) -> int:
    """Load the config, open the key service and run `cmd` against it."""
    config = command_config(args)

    async def run() -> None:
        async with open_key_service(config) as svc:
            await cmd(args, svc, out)

    asyncio.run(run())
    return 0
