"""`.keygate/dev.json` as the CLI finds it: damaged, stale, or naming a pid that is now
another process's. Only a `keygate dev` holding the folder's lock counts as running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dev_state import STATE_FILE, hold_run_lock, read_state, running_state
from gateway.embedded import reuse_or_free_port
from tests.support.gateway_process import REPO_ROOT


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port something listens on, as a recorded PostgreSQL port would be."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def record(folder: Path, text: str | bytes) -> Path:
    path = folder / STATE_FILE
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return folder


def state_json(port: int, pid: object) -> str:
    return json.dumps(
        {"postgres_port": port, "redis_port": port, "config": "/nowhere.yaml", "pid": pid}
    )


@pytest.mark.parametrize(
    "pid",
    [
        os.getpid(),  # a live process, but not a `keygate dev`: the pid was reused
        1,  # init: alive, someone else's
        0,  # os.kill(0, 0) signals our own process group: "alive"
        -1,  # os.kill(-1, 0) signals every process we may signal: "alive"
        2**40,  # os.kill raises OverflowError
    ],
)
def test_a_live_or_odd_pid_without_the_lock_is_not_a_running_dev(
    tmp_path: Path, listening_port: int, pid: int
) -> None:
    folder = record(tmp_path, state_json(listening_port, pid))
    assert read_state(folder) is not None
    assert running_state(folder) is None


def test_the_lock_holder_is_the_running_dev_and_the_only_one(
    tmp_path: Path, listening_port: int
) -> None:
    folder = record(tmp_path, state_json(listening_port, os.getpid()))
    lock = hold_run_lock(folder)
    assert lock is not None
    try:
        found = running_state(folder)
        assert found is not None and found.postgres_port == listening_port
        assert hold_run_lock(folder) is None  # a second `keygate dev` here is refused
    finally:
        lock.close()
    assert running_state(folder) is None  # released when the holder is gone
    again = hold_run_lock(folder)
    assert again is not None
    again.close()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '"text"',
        "42",
        "null",
        '{"postgres_port": "five", "redis_port": 1}',
        '{"postgres_port": 70000, "redis_port": 6379}',
        '{"postgres_port": -1, "redis_port": 6379}',
        '{"postgres_port": 0, "redis_port": 6379}',
        '{"postgres_port": 5432}',
        '{"postgres_port": 5432, "redis_port": 6379, "pid": "x"}',
        '{"postgres_port": 5432, "redis_port": 6379, "pid": []}',
        b'\xff\xfe{"postgres_port": 5432}',
    ],
)
def test_a_damaged_state_file_reads_as_none(tmp_path: Path, text: str | bytes) -> None:
    folder = record(tmp_path, text)
    assert read_state(folder) is None
    assert running_state(folder) is None


def test_recorded_ports_out_of_range_do_not_crash_the_next_dev(tmp_path: Path) -> None:
    folder = record(tmp_path, '{"postgres_port": 70000, "redis_port": 99999}')
    state = read_state(folder)
    port = reuse_or_free_port(state.postgres_port if state else None)  # OverflowError before
    assert 0 < port < 65536


def test_the_cli_in_a_folder_with_a_damaged_state_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / ".keygate").mkdir()
    record(tmp_path / ".keygate", state_json(5432, 2**40))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "orgs", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("keygate: config error:") and "no config file" in done.stderr
