"""deploy/kubernetes runs as shipped (SPEC §9): schema-valid, and its parts agree with
each other and with the gateway's config (ports, probes, drain timings, secrets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.deploy import (
    KUBERNETES,
    PROJECT_VERSION,
    config_from_text,
    host_port,
    pinned,
    run,
    tool,
    yaml_documents,
)

SECRET_ENV = {"KEYGATE_SECRET", "KEYGATE_DATABASE_URL", "KEYGATE_REDIS_URL", "KEYGATE_ADMIN_TOKEN"}


def manifests() -> list[Path]:
    found = sorted(KUBERNETES.glob("*.y*ml"))
    assert found, f"no manifests in {KUBERNETES}"
    return found


def documents() -> list[dict[str, Any]]:
    return [doc for path in manifests() for doc in yaml_documents(path)]


def one(kind: str) -> dict[str, Any]:
    [doc] = [d for d in documents() if d["kind"] == kind]
    return doc


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = one("Deployment")["spec"]["template"]["spec"]
    return spec


def gateway_container() -> dict[str, Any]:
    [container] = pod_spec()["containers"]
    assert isinstance(container, dict)
    return container


def test_manifests_pass_strict_schema_validation() -> None:
    binary = tool("kubernetes-validate", "pip: kubernetes-validate, in the test extra")
    result = run([binary, "--strict", "--quiet", *map(str, manifests())])
    assert result.code == 0, result.output


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The validator really fails: a misspelt field in a copy of the Deployment."""
    binary = tool("kubernetes-validate", "pip: kubernetes-validate, in the test extra")
    text = (
        manifests()[0]
        .read_text()
        .replace("terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", 1)
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    result = run([binary, "--strict", "--quiet", str(broken)])
    assert result.code != 0 and "terminationGracePeriodSecond" in result.output, result.output


def test_the_kinds_that_make_it_run() -> None:
    kinds = [d["kind"] for d in documents()]
    for kind in ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget"):
        assert kind in kinds, f"missing {kind}"
    # Secrets are created by the operator, never shipped with values in the repository.
    assert "Secret" not in kinds
    for doc in documents():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc


def configmap_config(tmp_path: Path) -> Any:
    container = gateway_container()
    args = container["args"]
    assert args[0] == "serve"
    config_path = args[args.index("--config") + 1]
    config_dir, _, file_name = config_path.rpartition("/")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    [volume] = [name for name, path in mounts.items() if path == config_dir]
    configmap_name = volumes[volume]["configMap"]["name"]
    [configmap] = [
        d
        for d in documents()
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == configmap_name
    ]
    return config_from_text(configmap["data"][file_name], tmp_path)


def test_the_configmap_is_the_config_serve_reads(tmp_path: Path) -> None:
    config = configmap_config(tmp_path)
    ports = {p["name"]: p["containerPort"] for p in gateway_container()["ports"]}
    proxy_host, proxy_port = host_port(config.listen.proxy)
    admin_host, admin_port = host_port(config.listen.admin)
    assert ports == {"proxy": proxy_port, "admin": admin_port}
    # A loopback admin listener would fail every probe and every scrape.
    assert proxy_host == "0.0.0.0" and admin_host == "0.0.0.0"


def test_secrets_come_from_the_secret() -> None:
    init_and_main = [*pod_spec().get("initContainers", []), *pod_spec()["containers"]]
    for container in init_and_main:
        for var in container.get("env", []):
            if var["name"] in SECRET_ENV:
                assert "value" not in var, f"{container['name']}: {var['name']} written inline"
                assert var["valueFrom"]["secretKeyRef"]["key"] == var["name"]
    env = {v["name"]: v for v in gateway_container()["env"]}
    assert set(env) >= SECRET_ENV
    required = {
        name for name, v in env.items() if not v["valueFrom"]["secretKeyRef"].get("optional", False)
    }
    assert {"KEYGATE_SECRET", "KEYGATE_DATABASE_URL", "KEYGATE_REDIS_URL"} <= required
    [migrate] = pod_spec()["initContainers"]
    assert migrate["args"] == ["migrate"]
    assert "KEYGATE_DATABASE_URL" in {v["name"] for v in migrate["env"]}


def test_probes_and_drain_timings_fit_the_config(tmp_path: Path) -> None:
    config = configmap_config(tmp_path)
    container = gateway_container()
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert liveness["httpGet"] == {"path": "/healthz", "port": "admin"}
    # A draining pod (503 from SIGTERM on) is seen unready within drain_delay.
    noticed = readiness["periodSeconds"] * readiness.get("failureThreshold", 3)
    assert noticed <= config.server.drain_delay, (noticed, config.server.drain_delay)
    # The kubelet's SIGKILL must not cut the delay and the drain short.
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace > config.server.drain_delay + config.server.drain_timeout
    assert "lifecycle" not in container  # no preStop: the gateway keeps accepting itself


def test_admin_port_stays_off_the_traffic_service() -> None:
    services = [d for d in documents() if d["kind"] == "Service"]
    labels = one("Deployment")["spec"]["selector"]["matchLabels"]
    traffic = [s for s in services if any(p["targetPort"] == "proxy" for p in s["spec"]["ports"])]
    assert len(traffic) == 1, "exactly one Service takes the proxy traffic"
    assert all(p["targetPort"] != "admin" for p in traffic[0]["spec"]["ports"])
    for service in services:
        assert service["spec"]["selector"] == labels
        if any(p["targetPort"] == "admin" for p in service["spec"]["ports"]):
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP", (
                "the admin listener must not be exposed outside the cluster"
            )


def test_disruption_budget_resources_and_security() -> None:
    deployment = one("Deployment")
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["metadata"]["labels"] == labels
    budget = one("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"] == labels
    replicas = deployment["spec"]["replicas"]
    if "maxUnavailable" in budget:
        assert 0 < budget["maxUnavailable"] < replicas
    else:
        assert 0 < budget["minAvailable"] < replicas
    pod = pod_spec()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"].get("runAsUser", 1) != 0
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        requests = container["resources"]["requests"]
        assert {"cpu", "memory"} <= set(requests), container["name"]
        assert "memory" in container["resources"]["limits"], container["name"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("container", ["initContainers", "containers"])
def test_images_are_pinned_to_the_release(container: str) -> None:
    for spec in pod_spec()[container]:
        image = spec["image"]
        assert pinned(image) and not image.endswith(":latest"), image
        assert image.rpartition(":")[2] == PROJECT_VERSION, (
            f"{image}: tag the image with the project version {PROJECT_VERSION}"
        )
