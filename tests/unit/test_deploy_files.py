"""The deployment files: they parse, they name the right things, and they use only §8 metrics.

There is no Docker engine or cluster here: compose and Kubernetes files are checked as YAML,
the Prometheus rules and config with `promtool` (skipped only where it is not installed),
and every PromQL expression's metric names against the metrics of SPEC §8.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config
from tests.support.spec import SPEC_METRICS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SPEC_LABELS = {"route", "method", "code", "outcome", "upstream", "tier", "result", "store", "le",
               "task"}  # task: keygate_background_restarts_total (beyond §8)
PROMQL_WORDS = {
    # aggregations, functions and keywords used in PromQL (not metric names)
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "clamp_min", "clamp_max", "clamp", "abs", "ceil", "floor",
    "round", "vector", "scalar", "time", "absent", "absent_over_time", "changes", "resets",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time",
    "predict_linear", "label_replace", "label_join", "sort", "sort_desc", "exp", "ln",
    "log2", "log10", "sqrt", "timestamp", "e", "inf", "nan",
}


def yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label matchers, ranges, groupings removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    tokens = {t for t in tokens if not re.fullmatch(r"\d+(?:\.\d+)?[eE]?", t)}
    return tokens - PROMQL_WORDS


def spec_family(name: str) -> str | None:
    """The §8 family a selected series belongs to (histograms expose _bucket/_sum/_count)."""
    if name in SPEC_METRICS:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and SPEC_METRICS.get(base) == "histogram":
            return base
    return None


def check_expr(expr: str, where: str) -> set[str]:
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    unknown = {n for n in names if spec_family(n) is None}
    assert not unknown, f"{where}: names outside SPEC §8: {sorted(unknown)} in {expr!r}"
    for matcher in re.findall(r"\{([^}]*)\}", expr):
        for label in re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matcher):
            assert label in SPEC_LABELS, f"{where}: label {label!r} is not a §8 label"
    return names


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, route) '
            '(rate(keygate_request_duration_seconds_bucket{route!="none"}[5m]))) > 0.5')
    assert metric_names(expr) == {"keygate_request_duration_seconds_bucket"}
    assert metric_names("up == 0 and on(job) keygate_last_used_pending") == {
        "up", "keygate_last_used_pending"}
    assert spec_family("keygate_requests_total_bucket") is None
    with pytest.raises(AssertionError):
        check_expr("rate(http_requests_total[5m])", "example")


def test_compose_file_has_the_stack() -> None:
    [compose] = yaml_documents(ROOT / "docker-compose.yml")
    services = compose["services"]
    assert {"gateway", "postgres", "redis", "upstream", "prometheus"} <= set(services)
    gateway = services["gateway"]
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile"
    assert gateway["command"][0] == "serve"
    env = gateway["environment"]
    assert {"KEYGATE_DATABASE_URL", "KEYGATE_REDIS_URL", "KEYGATE_SECRET"} <= set(env)
    assert "postgres" in env["KEYGATE_DATABASE_URL"] and "redis" in env["KEYGATE_REDIS_URL"]
    # Every file a service mounts from the repository exists.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    # The gateway's config file is a valid Keygate config.
    [mounted] = [v.split(":")[0] for v in gateway["volumes"] if "compose.yaml" in v]
    config = load_config(str(ROOT / mounted), env={})
    assert config.routes and config.listen.admin.endswith(":8081")
    prometheus = services["prometheus"]
    assert any("prometheus.yml" in v for v in prometheus["volumes"])
    assert any("alerts.yml" in v for v in prometheus["volumes"])


def test_dockerfile_runs_keygate_as_non_root() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users, "the image must set USER"
    assert users[-1] not in ("root", "0") and not users[-1].startswith("0:"), users
    entrypoint = [line for line in lines if line.upper().startswith("ENTRYPOINT")]
    assert entrypoint and "keygate" in entrypoint[-1]
    cmd = [line for line in lines if line.upper().startswith("CMD")]
    assert cmd and "serve" in cmd[-1]
    assert any(line.upper().startswith("FROM") and "slim" in line for line in lines)


def test_kubernetes_manifests() -> None:
    manifests = sorted((DEPLOY / "kubernetes").glob("*.y*ml"))
    assert manifests
    docs = [doc for path in manifests for doc in yaml_documents(path)]
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service"} <= kinds
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"].get("runAsUser", 1) != 0
    [container] = pod["containers"]
    assert container["args"][0] == "serve"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"proxy": 8080, "admin": 8081}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    labels = deployment["spec"]["selector"]["matchLabels"]
    for service in (d for d in docs if d["kind"] == "Service"):
        assert service["spec"]["selector"] == labels


def dashboard_exprs(node: Any) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield node.get("refId", "?"), value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


def test_grafana_dashboard_uses_only_spec_metrics() -> None:
    dashboards = sorted((DEPLOY / "grafana").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        assert dashboard.get("title") and dashboard.get("panels")
        exprs = list(dashboard_exprs(dashboard))
        assert exprs, f"{path.name}: no queries"
        used: set[str] = set()
        for ref, expr in exprs:
            used |= {spec_family(n) or n for n in check_expr(expr, f"{path.name} {ref}")}
        # The dashboard covers traffic, latency, the key cache and the stores.
        assert {"keygate_requests_total", "keygate_request_duration_seconds",
                "keygate_key_cache_requests_total", "keygate_store_errors_total"} <= used


def test_grafana_exprs_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses PromQL in rule files: wrap the dashboard's queries in one."""
    rules = [{"record": f"dashboard:query{i}", "expr": expr.replace("$__rate_interval", "5m")}
             for path in sorted((DEPLOY / "grafana").glob("*.json"))
             for i, (_, expr) in enumerate(dashboard_exprs(json.loads(path.read_text())))]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path))


def alert_rules() -> list[dict[str, Any]]:
    [doc] = yaml_documents(DEPLOY / "prometheus" / "alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alerts_reference_only_spec_metrics() -> None:
    rules = alert_rules()
    assert rules
    by_name = {}
    for rule in rules:
        assert rule.get("alert") and rule.get("expr"), rule
        assert rule.get("annotations", {}).get("summary"), rule["alert"]
        check_expr(rule["expr"], rule["alert"])
        by_name[rule["alert"]] = rule["expr"]
    exprs = "\n".join(by_name.values())
    # The four alerts: 5xx ratio, auth_unavailable, store errors, stamp backlog.
    assert re.search(r'keygate_requests_total\{[^}]*code=~"5', exprs)
    assert 'outcome="auth_unavailable"' in exprs
    assert "keygate_store_errors_total" in exprs
    assert "keygate_last_used_pending" in exprs


def promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (Debian/Ubuntu package: prometheus)")
    result = subprocess.run([binary, *args], capture_output=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    return output


def test_promtool_checks_the_alert_rules() -> None:
    output = promtool("check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output


def test_promtool_checks_the_prometheus_config(tmp_path: Path) -> None:
    """The scrape config, with its rule file pointed at the repository's copy."""
    [config] = yaml_documents(DEPLOY / "prometheus" / "prometheus.yml")
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    assert "gateway:8081" in targets  # the compose service's admin listener
    assert any(str(f).endswith("alerts.yml") for f in config["rule_files"])
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    promtool("check", "config", str(path))
