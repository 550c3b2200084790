"""Real processes for end-to-end tests: the demo upstream and `keygate serve`.

Each runs as a subprocess of the test session on free ports, with its stdout and stderr
collected to files (read them after a failure, or grep them for what must never be
logged). Readiness is checked over the network, never by sleeping: the upstream's port
accepts connections, the gateway's admin `/healthz` answers 200. Stopping sends SIGTERM
and checks the exit code, so an unclean shutdown fails the test that caused it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.embedded import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    return free_port()


@dataclass
class ManagedProcess:
    """A subprocess with its output in files; `stop` ends it with SIGTERM."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    _files: list[Any] = field(default_factory=list, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        """Everything the process wrote so far, stdout then stderr."""
        return self.stdout() + self.stderr()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return (
            f"--- {self.name} stdout ---\n{self.stdout()[-chars:]}\n"
            f"--- {self.name} stderr ---\n{self.stderr()[-chars:]}"
        )

    def rss_bytes(self) -> int:
        """Resident set size of the process itself (not its children)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for {self.name} (pid {self.pid})")

    def stop(self, expect_code: int | None = 0, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait, and check the exit code (None: accept any). Idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self._close_files()
                raise AssertionError(
                    f"{self.name} did not exit within {timeout}s of SIGTERM\n{self.tail()}"
                ) from None
        self._close_files()
        code = self.proc.returncode
        if expect_code is not None:
            assert code == expect_code, (
                f"{self.name} exited with {code}, expected {expect_code}\n{self.tail()}"
            )
        return code

    def kill(self) -> None:
        """Last resort for teardown after a failure: SIGKILL, no checks."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._close_files()

    def _close_files(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()


def spawn(
    name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None
) -> ManagedProcess:
    """Start `argv` with output to `log_dir/<name>.{stdout,stderr}.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path = log_dir / f"{name}.stdout.log"
    stderr_path = log_dir / f"{name}.stderr.log"
    out = stdout_path.open("wb")
    err = stderr_path.open("wb")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        list(argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env, cwd=REPO_ROOT
    )
    return ManagedProcess(name, proc, stdout_path, stderr_path, [out, err])


def _wait(process: ManagedProcess, ready: Any, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not process.alive():
            process._close_files()
            raise RuntimeError(
                f"{process.name} exited with {process.proc.returncode} before {what}\n"
                f"{process.tail()}"
            )
        if ready():
            return
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{process.name}: {what} not seen within {START_TIMEOUT}s\n{process.tail()}")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class UpstreamProcess:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_listener(name: str, argv: Sequence[str], port: int, log_dir: Path) -> UpstreamProcess:
    """Start `argv` (a server that listens on `port`), ready once the port accepts."""
    process = spawn(name, argv, log_dir)
    _wait(process, lambda: _port_open(port), f"port {port} open")
    return UpstreamProcess(process, port)


def start_upstream(log_dir: Path, name: str = "upstream") -> UpstreamProcess:
    """`python -m gateway.demo_upstream` on a free port, ready to answer."""
    port = free_port()
    argv = [sys.executable, "-m", "gateway.demo_upstream", "--port", str(port)]
    return start_listener(name, argv, port, log_dir)


@contextmanager
def running_upstream(log_dir: Path, name: str = "upstream") -> Iterator[UpstreamProcess]:
    """The demo upstream for the block; it must exit cleanly on SIGTERM afterwards."""
    up = start_upstream(log_dir, name)
    try:
        yield up
    finally:
        up.process.stop(expect_code=0)


@dataclass
class GatewayProcess:
    process: ManagedProcess
    proxy_port: int
    admin_port: int
    config_path: Path
    env: dict[str, str]
    check_port: int | None = None  # listen.check, when started with check=True
    check_grpc_port: int | None = None  # listen.check_grpc, likewise

    @property
    def check_url(self) -> str:
        assert self.check_port is not None, "start the gateway with check=True"
        return f"http://127.0.0.1:{self.check_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def healthy(self) -> bool:
        return self.process.alive() and _http_ok(self.admin_url + "/healthz")


@contextmanager
def stopped_cleanly(gw: GatewayProcess) -> Iterator[GatewayProcess]:
    """Yield `gw`, then stop it and require exit code 0 (killed instead if the body failed)."""
    try:
        yield gw
    except BaseException:
        gw.process.kill()
        raise
    gw.process.stop(expect_code=0)


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    """Write a gateway config (a plain mapping) as YAML."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def start_gateway(
    config: Mapping[str, Any],
    log_dir: Path,
    env: Mapping[str, str],
    *,
    name: str = "gateway",
    workers: int | None = None,
    check: bool = False,
) -> GatewayProcess:
    """`python -m gateway serve --config <tmp>` on free ports, ready when /healthz is 200.

    `config` is the YAML document minus `listen`, which is filled in here (with
    `server.drain_delay: 0s` unless given; `check=True` adds listen.check and
    listen.check_grpc). `env` carries KEYGATE_SECRET and the store URLs.
    """
    proxy_port, admin_port = free_port(), free_port()
    listen = {"proxy": f"127.0.0.1:{proxy_port}", "admin": f"127.0.0.1:{admin_port}"}
    check_port = check_grpc_port = None
    if check:
        check_port, check_grpc_port = free_port(), free_port()
        listen["check"] = f"127.0.0.1:{check_port}"
        listen["check_grpc"] = f"127.0.0.1:{check_grpc_port}"
    # Stopping is how most tests end: no drain delay (SPEC §9) unless the test sets one.
    server = {"drain_delay": "0s", **config.get("server", {})}
    full = {"listen": listen, **config, "server": server}
    path = write_config(log_dir / f"{name}.yaml", full)
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(path)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    # KEYGATE_CONFIG from the developer's shell must not win over --config's neighbours.
    clean_env = {**env, "KEYGATE_CONFIG": str(path)}
    process = spawn(name, argv, log_dir, clean_env)
    gateway = GatewayProcess(
        process, proxy_port, admin_port, path, dict(clean_env), check_port, check_grpc_port
    )
    ports = [p for p in (proxy_port, check_port, check_grpc_port) if p is not None]
    _wait(
        process,
        lambda: _http_ok(gateway.admin_url + "/healthz") and all(map(_port_open, ports)),
        "admin /healthz 200 and the proxy (and check) ports open",
    )
    return gateway
