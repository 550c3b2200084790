"""`.keygate/dev.json`: what a `keygate dev` in this folder runs on, for the next run and
for the CLI.

`keygate dev` records its store ports here so that the next run reuses them (the URLs a
user copied stay true), and while it runs, its pid, config file and store URLs, so that
`keygate …` started from the same folder without --config or KEYGATE_* settings talks to
it: the commands `keygate dev` prints work as printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

DATA_DIR = Path(".keygate")
STATE_FILE = "dev.json"
SECRET_FILE = "secret"  # noqa: S105 - a file name
DEFAULT_CONFIG = Path("config/keygate.yaml")  # what the CLI reads when present
# What a user may set to point the CLI elsewhere; any of them turns discovery off.
_EXPLICIT = ("KEYGATE_CONFIG", "KEYGATE_DATABASE_URL", "KEYGATE_REDIS_URL")


@dataclass(frozen=True)
class DevState:
    """The record of a `keygate dev` run; `pid` is None once it has stopped."""

    postgres_port: int
    redis_port: int
    database_url: str = ""
    redis_url: str = ""
    config: str = ""
    pid: int | None = None


@dataclass(frozen=True)
class DevEnvironment:
    """How to load the configuration of a running `keygate dev`."""

    config: str
    env: dict[str, str]


def read_state(data_dir: Path = DATA_DIR) -> DevState | None:
    """The recorded state, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((data_dir / STATE_FILE).read_text())
        return DevState(
            postgres_port=int(data["postgres_port"]),
            redis_port=int(data["redis_port"]),
            database_url=str(data.get("database_url", "")),
            redis_url=str(data.get("redis_url", "")),
            config=str(data.get("config", "")),
            pid=int(data["pid"]) if data.get("pid") is not None else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(state: DevState, data_dir: Path = DATA_DIR) -> None:
    path = data_dir / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2) + "\n")
    temporary.replace(path)


def running_state(data_dir: Path = DATA_DIR) -> DevState | None:
    """The state of a `keygate dev` that is running now from `data_dir`'s folder."""
    state = read_state(data_dir)
    if state is None or state.pid is None or not _alive(state.pid):
        return None
    return state if _listening(state.postgres_port) else None


def dev_environment(
    explicit_config: str | None,
    env: dict[str, str] | None = None,
    data_dir: Path = DATA_DIR,
) -> DevEnvironment | None:
    """The config and environment of a running `keygate dev`, when the user named no
    configuration of their own (no --config, no KEYGATE_CONFIG/…_URL, no
    config/keygate.yaml); otherwise None."""
    base = dict(os.environ if env is None else env)
    if explicit_config or any(base.get(name) for name in _EXPLICIT):
        return None
    if DEFAULT_CONFIG.exists():
        return None
    state = running_state(data_dir)
    if state is None or not state.config:
        return None
    base.update(KEYGATE_DATABASE_URL=state.database_url, KEYGATE_REDIS_URL=state.redis_url)
    with contextlib.suppress(OSError):
        base["KEYGATE_SECRET"] = (data_dir / SECRET_FILE).read_text().strip()
    return DevEnvironment(state.config, base)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
