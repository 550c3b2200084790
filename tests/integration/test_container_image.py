"""Build deploy/Dockerfile with a real container engine and smoke-test the image: it runs
as non-root, `keygate serve` answers /healthz and /readyz against the session's real
Postgres and Redis, and the image's own HEALTHCHECK reports healthy.

Skipped, with the reason, where no engine can build and run containers (no podman or
docker, the base image cannot be pulled, or the sandbox forbids running containers).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.embedded import free_port
from tests.support.deploy import DOCKERFILE, ROOT, run
from tests.support.stores import Stores

pytestmark = pytest.mark.container
START_TIMEOUT = 60.0


def first_line_of_failure(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1].strip()


def container_engine() -> str:
    """podman or docker, once it has shown it can pull the base image and run a container."""
    engine = shutil.which("podman") or shutil.which("docker")
    if engine is None:
        pytest.skip("no container engine: install podman (Debian package) or docker")
    base = next(
        line.split()[1]
        for line in DOCKERFILE.read_text().splitlines()
        if line.upper().startswith("FROM ")
    )
    if run([engine, "image", "inspect", base]).code != 0:
        pulled = run([engine, "pull", base], timeout=600)
        if pulled.code != 0:
            pytest.skip(
                f"{engine} cannot pull the base image {base}: "
                f"{first_line_of_failure(pulled.output)}"
            )
    probe = run([engine, "run", "--rm", "--network", "none", base, "python", "-c", "pass"])
    if probe.code != 0:
        pytest.skip(f"{engine} cannot run containers here: {first_line_of_failure(probe.output)}")
    return engine


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[str, str]]:
    engine = container_engine()
    tag = f"keygate:smoke-{secrets.token_hex(4)}"
    built = run([engine, "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)], timeout=900)
    assert built.code == 0, built.output[-4000:]
    try:
        yield engine, tag
    finally:
        run([engine, "rmi", "-f", tag])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def health_status(engine: str, name: str) -> str:
    if engine.endswith("podman"):
        return "healthy" if run([engine, "healthcheck", "run", name]).code == 0 else "not yet"
    result = run([engine, "inspect", "--format", "{{json .State.Health}}", name])
    return str(json.loads(result.output or "{}").get("Status", "none"))


def test_image_serves_as_non_root_and_reports_healthy(
    image: tuple[str, str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    engine, tag = image
    stores: Stores = request.getfixturevalue("stores")  # only once an engine is usable
    proxy_port, admin_port = free_port(), free_port()
    baked = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    baked["listen"] = {"proxy": f"0.0.0.0:{proxy_port}", "admin": f"0.0.0.0:{admin_port}"}
    config = tmp_path / "keygate.yaml"
    config.write_text(yaml.safe_dump(baked))
    config.chmod(0o644)
    name = f"keygate-smoke-{secrets.token_hex(4)}"
    started = run(
        [
            engine,
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "-v",
            f"{config}:/etc/keygate/keygate.yaml:ro",
            "-e",
            f"KEYGATE_DATABASE_URL={stores.database_url}",
            "-e",
            f"KEYGATE_REDIS_URL={stores.redis_url}",
            "-e",
            f"KEYGATE_SECRET={secrets.token_hex(32)}",
            "-e",
            f"KEYGATE_HEALTHCHECK_URL=http://127.0.0.1:{admin_port}/healthz",
            tag,
        ]
    )
    assert started.code == 0, started.output
    try:
        deadline = time.monotonic() + START_TIMEOUT
        status = 0
        while time.monotonic() < deadline and status != 200:
            try:
                status, _ = get(f"http://127.0.0.1:{admin_port}/healthz")
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        logs = run([engine, "logs", name]).output[-4000:]
        assert status == 200, f"/healthz never answered 200\n{logs}"
        ready_status, body = get(f"http://127.0.0.1:{admin_port}/readyz")
        assert ready_status == 200, body
        assert json.loads(body)["status"] == "ready"
        uid = run([engine, "exec", name, "id", "-u"])
        assert uid.code == 0 and uid.output.strip() != "0", uid.output
        while time.monotonic() < deadline and health_status(engine, name) != "healthy":
            time.sleep(1)
        assert health_status(engine, name) == "healthy", run([engine, "inspect", name]).output
        stopped = run([engine, "stop", "-t", "45", name], timeout=90)
        assert stopped.code == 0, stopped.output
        exit_code = run([engine, "inspect", "--format", "{{.State.ExitCode}}", name])
        assert exit_code.output.strip() == "0", run([engine, "logs", name]).output[-4000:]
    finally:
        run([engine, "rm", "-f", name])
