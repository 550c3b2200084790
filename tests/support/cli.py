"""The `keygate` command as tests run it: in-process through its entry point, or as a
subprocess (`python -m gateway`) exactly as an operator would."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.cli import main
from tests.support.gateway_process import REPO_ROOT


@dataclass
class CliResult:
    code: int
    out: str
    err: str
    seconds: float = 0.0  # wall time, for the subprocess runs

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """Runs `keygate ARGS…` in-process through its real entry point."""

    def __call__(self, *args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(args), out=out, err=err)
        return CliResult(code, out.getvalue(), err.getvalue())

    def ok(self, *args: str) -> CliResult:
        result = self(*args)
        assert result.code == 0, f"keygate {' '.join(args)} failed: {result.err}"
        return result


def subprocess_env(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without the developer's KEYGATE_*, plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}
    return {**base, **env}


async def run_keygate(config_path: Path, env: Mapping[str, str], *args: str) -> CliResult:
    """`python -m gateway ARGS… --config CONFIG_PATH` in a subprocess, with `env`."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        "--config",
        str(config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=subprocess_env(env),
        cwd=REPO_ROOT,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode(), time.monotonic() - started)
