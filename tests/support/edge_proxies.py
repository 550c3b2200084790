"""Real nginx and Caddy (Debian packages), started by the tests with the configs shipped
under deploy/, rendered to test ports: only the addresses in them change."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.embedded import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def render(shipped: Path, addresses: Mapping[str, str]) -> str:
    """The shipped config with its addresses replaced; each must occur in it."""
    text = shipped.read_text(encoding="utf-8")
    for old, new in addresses.items():
        assert old in text, f"{shipped.name} no longer mentions {old}"
        text = text.replace(old, new)
    return text


def require(binary: str) -> str:
    """The binary's path; skips the test where it is missing (.ci/run installs it)."""
    sbin = Path("/usr/sbin") / binary  # nginx lives there, not always on a user's PATH
    path = shutil.which(binary) or (str(sbin) if sbin.exists() else None)
    if path is None:
        pytest.skip(f"{binary} is not installed (apt-get install -y {binary})")
    return path


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}"
            )
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(
        f"port {port} not open after {timeout}s: {log.read_text(errors='replace')[-2000:]}"
    )


def _stop(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextmanager
def running_nginx(site_config: str, work: Path) -> Iterator[int]:
    """nginx in the foreground with `site_config` in its http {} context; yields its port
    (the site's `listen` must be `__PORT__`)."""
    nginx = require("nginx")
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    (work / "keygate.conf").write_text(site_config.replace("__PORT__", str(port)))
    user = "user root;\n" if os.geteuid() == 0 else ""  # temp files in a 0700 tmp dir
    (work / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {work}/nginx.pid;\n"
        f"error_log {work}/error.log info;\nevents {{ worker_connections 256; }}\n"
        "http {\n"
        f"  access_log {work}/access.log;\n"
        f"  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;\n"
        f"  fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi;\n"
        f"  scgi_temp_path {work}/scgi;\n"
        f"  include {work}/keygate.conf;\n"
        "}\n"
    )
    log = work / "nginx.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [nginx, "-p", str(work), "-c", str(work / "nginx.conf")], stdout=out, stderr=out
        )
    try:
        _wait_port(port, process, log)
        yield port
    finally:
        _stop(process, signal.SIGQUIT)


@contextmanager
def running_caddy(caddyfile: str, work: Path) -> Iterator[int]:
    """Caddy with the shipped Caddyfile, rendered with its site address as `__SITE__`
    (-> http://127.0.0.1:<port>), the admin API off; yields the port."""
    caddy = require("caddy")
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    # Caddy 2.6 has no `persist_config` option: with the admin API off it saves nothing.
    text = "{\n\tadmin off\n}\n\n" + caddyfile.replace("__SITE__", f"http://127.0.0.1:{port}")
    (work / "Caddyfile").write_text(text)
    env = {
        **os.environ,
        "HOME": str(work),
        "XDG_DATA_HOME": str(work / "data"),
        "XDG_CONFIG_HOME": str(work / "config"),
    }
    log = work / "caddy.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [caddy, "run", "--config", str(work / "Caddyfile"), "--adapter", "caddyfile"],
            stdout=out,
            stderr=out,
            env=env,
        )
    try:
        _wait_port(port, process, log)
        yield port
    finally:
        _stop(process, signal.SIGTERM)
