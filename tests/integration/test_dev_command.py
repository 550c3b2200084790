"""`keygate dev` from a fresh folder: embedded stores, demo upstream, a printed demo key
that works, and Ctrl-C stopping everything it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from gateway.embedded import free_port

KEY = re.compile(r"kg_live_[0-9A-Za-z]{46}")


def _status(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _wait_for(output: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = output.read_text(errors="replace")
        if pattern in text:
            return text
        assert proc.poll() is None, f"keygate dev exited early:\n{text}"
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not printed within {timeout}s:\n{output.read_text()}")


def _start_dev(folder: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "dev", "--config", str(config)],
            cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=env,
        )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=30)


def test_dev_serves_a_working_demo_key_and_stops_cleanly(tmp_path: Path) -> None:
    source = yaml.safe_load(Path("config/dev.yaml").read_text())
    proxy, admin, upstream = free_port(), free_port(), free_port()
    source["listen"] = {"proxy": f"127.0.0.1:{proxy}", "admin": f"127.0.0.1:{admin}"}
    source["upstreams"]["demo"]["url"] = f"http://127.0.0.1:{upstream}"
    config = tmp_path / "dev.yaml"
    config.write_text(yaml.safe_dump(source))
    log = tmp_path / "dev.log"

    proc = _start_dev(tmp_path, config, log)
    try:
        text = _wait_for(log, "Press Ctrl-C", proc, 60)
        key = KEY.search(text)
        assert key is not None, text
        base = f"http://127.0.0.1:{proxy}"
        auth = {"Authorization": f"Bearer {key.group()}"}
        assert _status(f"{base}/api/v1/sessions/42", auth) == 200
        assert _status(f"{base}/api/v1/sessions/42") == 401
        assert _status(f"{base}/api/v1/sessions", auth, method="POST") == 403
        assert "curl" in text
    finally:
        code = _stop(proc)
    assert code == 0, log.read_text()
    assert (tmp_path / ".keygate" / "postgres" / "PG_VERSION").exists()
    pid_file = tmp_path / ".keygate" / "postgres" / "postmaster.pid"
    assert not pid_file.exists(), "postgres left running"

    # Second run: data kept, the key is not shown again, and it still works.
    proc = _start_dev(tmp_path, config, log)
    try:
        text = _wait_for(log, "cannot be shown again", proc, 60)
        assert _status(f"http://127.0.0.1:{proxy}/api/v1/sessions/1", auth) == 200
    finally:
        assert _stop(proc) == 0
