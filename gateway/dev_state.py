"""`.keygate/dev.json`: what a `keygate dev` in this folder runs on, for the next run and
for the CLI.

`keygate dev` records its store ports here so that the next run reuses them (the URLs a
user copied stay true), and while it runs, its pid, config file and store URLs, so that
`keygate …` started from the same folder without --config or KEYGATE_* settings talks to
it: the commands `keygate dev` prints work as printed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

DATA_DIR = Path(".keygate")
STATE_FILE = "dev.json"
SECRET_FILE = "secret"  # noqa: S105 - a file name
# Held (flock) by a running `keygate dev` for its whole life, released by the kernel however
# it ends: a recorded pid proves nothing once the process is gone and the pid reused.
LOCK_FILE = "dev.lock"
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
        state = DevState(
            postgres_port=int(data["postgres_port"]),
            redis_port=int(data["redis_port"]),
            database_url=str(data.get("database_url", "")),
            redis_url=str(data.get("redis_url", "")),
            config=str(data.get("config", "")),
            pid=int(data["pid"]) if data.get("pid") is not None else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not all(0 < port < 65536 for port in (state.postgres_port, state.redis_port)):
        return None  # an edited or damaged file: new ports rather than a crash
    return state


def write_state(state: DevState, data_dir: Path = DATA_DIR) -> None:
    path = data_dir / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2) + "\n")
    temporary.replace(path)


def running_state(data_dir: Path = DATA_DIR) -> DevState | None:
    """The state of a `keygate dev` that is running now from `data_dir`'s folder."""
    state = read_state(data_dir)
    if state is None or state.pid is None or not _run_locked(data_dir):
        return None
    return state if _listening(state.postgres_port) else None


def hold_run_lock(data_dir: Path = DATA_DIR) -> IO[bytes] | None:
    """The lock of a running `keygate dev` in `data_dir`, or None when another run holds
    it. Keep the returned file open while running: closing it (or exiting) releases it."""
    handle = (data_dir / LOCK_FILE).open("a+b")
    for _attempt in range(10):  # a CLI's probe holds it for an instant; wait that out
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            time.sleep(0.05)
    handle.close()
    return None


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


def _run_locked(data_dir: Path) -> bool:
    """True while a `keygate dev` holds the lock of `data_dir`."""
    try:
        handle = (data_dir / LOCK_FILE).open("rb")
    except OSError:
        return False
    with handle:  # closing releases the probe's own shared lock at once
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
    return False


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
