"""docker-compose.yml runs as shipped (SPEC §9): `docker compose config` accepts it, every
long-running service has a health check and starts after what it needs is healthy, images
are pinned, and the gateway's mounted config is valid and reachable by Prometheus."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from tests.support.deploy import (
    COMPOSE_FILE,
    DEPLOY,
    PROJECT_VERSION,
    ROOT,
    compose_command,
    host_port,
    pinned,
    run,
    yaml_documents,
)

STACK = {"gateway", "postgres", "redis", "upstream", "prometheus"}
ONE_SHOT = {"migrate"}  # runs to completion: no health check, others wait for its exit 0


def compose_env(**extra: str) -> dict[str, str]:
    """The caller's environment without Keygate's secrets, plus `extra` (no real secret)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}
    return {**env, **extra}


def resolved() -> dict[str, Any]:
    """The file as `docker compose` resolves it (interpolated, anchors merged)."""
    argv = [*compose_command(), "-f", str(COMPOSE_FILE), "config", "--format", "json"]
    result = run(argv, env=compose_env(KEYGATE_SECRET="x" * 32))
    assert result.code == 0, result.output
    start = result.output.index("{")  # warnings, if any, come first on stderr
    model: dict[str, Any] = json.JSONDecoder().raw_decode(result.output[start:])[0]
    return model


def test_docker_compose_accepts_the_file() -> None:
    argv = [*compose_command(), "-f", str(COMPOSE_FILE), "config", "--quiet"]
    result = run(argv, env=compose_env(KEYGATE_SECRET="x" * 32))
    assert result.code == 0, result.output
    assert result.output.strip() == "", f"warnings: {result.output}"


def test_the_secret_is_required_with_a_message_that_says_how() -> None:
    argv = [*compose_command(), "-f", str(COMPOSE_FILE), "config", "--quiet"]
    result = run(argv, env=compose_env())
    assert result.code != 0
    assert "KEYGATE_SECRET" in result.output and "32" in result.output, result.output


def test_every_long_running_service_has_a_health_check() -> None:
    services = resolved()["services"]
    assert set(services) >= STACK
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if name in ONE_SHOT:
            continue
        assert check.get("test") and not check.get("disable"), f"{name}: no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_start_order_waits_for_health() -> None:
    services = resolved()["services"]
    assert set(services["gateway"]["depends_on"]) == {"migrate", "redis", "upstream"}
    for name in ("migrate", "redis", "upstream"):
        condition = services["gateway"]["depends_on"][name]["condition"]
        assert condition == (
            "service_completed_successfully" if name in ONE_SHOT else "service_healthy"
        ), name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_images_are_pinned() -> None:
    services = resolved()["services"]
    for name, service in services.items():
        image = service.get("image", "")
        assert pinned(image), f"{name}: {image!r} is not pinned to a release"
        if "build" in service:
            assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
            assert image.rpartition(":")[2] == PROJECT_VERSION, name
            assert service.get("pull_policy") == "build", f"{name}: would pull {image}"


def mounted_config() -> tuple[dict[str, Any], Path]:
    [compose] = yaml_documents(COMPOSE_FILE)
    gateway = compose["services"]["gateway"]
    [volume] = [v for v in gateway["volumes"] if v.split(":")[1] == "/etc/keygate/keygate.yaml"]
    return gateway, ROOT / volume.split(":")[0]


def test_gateway_config_is_valid_and_listens_for_the_other_containers() -> None:
    gateway, path = mounted_config()
    assert gateway["command"][0] == "serve"
    config = load_config(str(path), env={})
    assert config.routes
    proxy_host, proxy_port = host_port(config.listen.proxy)
    admin_host, admin_port = host_port(config.listen.admin)
    assert proxy_host == "0.0.0.0" and admin_host == "0.0.0.0"
    ports = gateway["ports"]
    assert f"{proxy_port}:{proxy_port}" in ports
    # The admin listener is published on the host's loopback only.
    assert f"127.0.0.1:{admin_port}:{admin_port}" in ports
    assert f"127.0.0.1:{admin_port}/healthz" in " ".join(gateway["healthcheck"]["test"])
    # `docker compose stop` waits for the drain before its SIGKILL.
    grace = float(gateway["stop_grace_period"].removesuffix("s"))
    assert grace > config.server.drain_delay + config.server.drain_timeout
    # Prometheus scrapes that listener by the service's name.
    [prometheus] = yaml_documents(DEPLOY / "prometheus" / "prometheus.yml")
    targets = [
        t
        for job in prometheus["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    ]
    assert f"gateway:{admin_port}" in targets
    # Every upstream the config names is a service of the stack.
    upstream_hosts = {u.url.split("//")[1].split(":")[0] for u in config.upstreams.values()}
    [compose] = yaml_documents(COMPOSE_FILE)
    assert upstream_hosts <= set(compose["services"]), upstream_hosts


def test_mounted_files_exist() -> None:
    [compose] = yaml_documents(COMPOSE_FILE)
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts missing {source}"


@pytest.mark.parametrize("service", ["postgres", "redis", "prometheus"])
def test_stores_are_not_published_beyond_loopback(service: str) -> None:
    [compose] = yaml_documents(COMPOSE_FILE)
    for port in compose["services"][service].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"{service}: {port}"
