"""The monitoring files: Prometheus rules and config pass `promtool` (installed by
`.ci/run`; skipped only where it is absent), and every PromQL expression, in the alerts and
in the Grafana dashboard, selects only the metrics of SPEC §8.

Compose, Kubernetes and the image: test_deploy_compose.py, test_deploy_kubernetes.py,
test_deploy_image.py.
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

from tests.support.deploy import DEPLOY, yaml_documents
from tests.support.spec import PROCESS_METRICS, SPEC_METRICS

SPEC_LABELS = {
    "route",
    "method",
    "code",
    "outcome",
    "upstream",
    "tier",
    "result",
    "store",
    "le",
    "task",
    "operation",
    "version",
    "worker",
}
# task: keygate_background_restarts_total (beyond §8); worker: process_* of each worker
PROMQL_WORDS = {
    # aggregations, functions and keywords used in PromQL (not metric names)
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
    "clamp",
    "abs",
    "ceil",
    "floor",
    "round",
    "vector",
    "scalar",
    "time",
    "absent",
    "absent_over_time",
    "changes",
    "resets",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "sum_over_time",
    "count_over_time",
    "predict_linear",
    "label_replace",
    "label_join",
    "sort",
    "sort_desc",
    "exp",
    "ln",
    "log2",
    "log10",
    "sqrt",
    "timestamp",
    "e",
    "inf",
    "nan",
}


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
    if name in SPEC_METRICS or name in PROCESS_METRICS:
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
    expr = (
        "histogram_quantile(0.99, sum by (le, route) "
        '(rate(keygate_request_duration_seconds_bucket{route!="none"}[5m]))) > 0.5'
    )
    assert metric_names(expr) == {"keygate_request_duration_seconds_bucket"}
    assert metric_names("up == 0 and on(job) keygate_last_used_pending") == {
        "up",
        "keygate_last_used_pending",
    }
    assert spec_family("keygate_requests_total_bucket") is None
    with pytest.raises(AssertionError):
        check_expr("rate(http_requests_total[5m])", "example")


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
        assert {
            "keygate_requests_total",
            "keygate_request_duration_seconds",
            "keygate_key_cache_requests_total",
            "keygate_store_errors_total",
        } <= used
        # ... and the operator's signals of issue 11: stores, secret, admin API, workers.
        assert {
            "keygate_store_up",
            "keygate_secret_mismatch",
            "keygate_build_info",
            "keygate_admin_requests_total",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
        } <= used


def test_grafana_exprs_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses PromQL in rule files: wrap the dashboard's queries in one."""
    rules = [
        {"record": f"dashboard:query{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for path in sorted((DEPLOY / "grafana").glob("*.json"))
        for i, (_, expr) in enumerate(dashboard_exprs(json.loads(path.read_text())))
    ]
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
    # Issue 11's signals: a store down, a different KEYGATE_SECRET, failed admin logins.
    assert "keygate_store_up" in exprs and "keygate_secret_mismatch" in exprs
    assert re.search(r'keygate_admin_requests_total\{[^}]*code="401"', exprs)


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
    targets = [
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert "gateway:8081" in targets  # the compose service's admin listener
    assert any(str(f).endswith("alerts.yml") for f in config["rule_files"])
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    promtool("check", "config", str(path))
