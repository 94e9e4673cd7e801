"""configs/grafana/ray_mlops_dashboard.json: valid Grafana JSON over the metrics we export.

Every PromQL expression may only name metrics the code creates (``ray.util.metrics`` names
``ray_mlops_*``, scraped as ``ray_<name>`` plus ``_total`` for counters and
``_bucket/_sum/_count`` for histograms), so a renamed metric breaks this test, not the
operator's dashboard.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "configs" / "grafana" / "ray_mlops_dashboard.json"
SUFFIXES = ("_total", "_bucket", "_sum", "_count")
EXPORTED = re.compile(r"\bray_ray_mlops_[a-z0-9_]+")
DEFINED = re.compile(r"""["'](ray_mlops_[a-z0-9_]+)["']""")
# What the dashboard must show (issue 7): metric -> the panel topic it serves.
REQUIRED = {
    "ray_mlops_requests": "request rate",
    "ray_mlops_request_latency_ms": "latency",
    "ray_mlops_request_errors": "errors",
    "ray_mlops_serving_version": "serving version",
    "ray_mlops_drift_p_value": "drift p-values per feature",
    "ray_mlops_monitor_windows": "windows",
    "ray_mlops_retrains": "retrainings",
    "ray_mlops_registry_events": "promotions",
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p["targets"]]


def defined_metrics() -> set[str]:
    """Every ``ray_mlops_*`` string literal in the package source (metric names among them)."""
    return {name for path in (ROOT / "ray_mlops").rglob("*.py") for name in DEFINED.findall(path.read_text())}


def metric_of(exported: str) -> str:
    """``ray_ray_mlops_requests_total`` -> ``ray_mlops_requests`` (Ray's prefix and suffix off)."""
    name = exported.removeprefix("ray_")
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_dashboard_structure(dashboard):
    assert dashboard["title"] and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 30
    panels = _panels(dashboard)
    assert len(panels) >= 8
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["title"] and panel["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys() and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and target["expr"].strip()
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_datasource_is_templated(dashboard):
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    ref = {"type": "prometheus", "uid": "${%s}" % variable["name"]}
    for panel in _panels(dashboard):
        assert panel["datasource"] == ref, panel["title"]
        assert all(t.get("datasource", ref) == ref for t in panel["targets"]), panel["title"]


def test_every_expression_names_only_exported_metrics(dashboard):
    defined = defined_metrics()
    assert {"ray_mlops_requests", "ray_mlops_registry_events"} <= defined  # the regex finds metrics
    used = {metric_of(m) for expr in _exprs(dashboard) for m in EXPORTED.findall(expr)}
    assert used, "no ray_ray_mlops_* metric in the dashboard"
    for expr in _exprs(dashboard):  # only our metrics: Ray's prefix on every name
        names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?:\{|\[)", expr)) - {"by", "without"}
        assert all(n.startswith("ray_ray_mlops_") for n in names), expr
    unknown = used - defined
    assert not unknown, f"dashboard names metrics the code does not export: {sorted(unknown)}"


@pytest.mark.parametrize("metric", sorted(REQUIRED))
def test_required_panels_are_there(dashboard, metric):
    used = {metric_of(m) for expr in _exprs(dashboard) for m in EXPORTED.findall(expr)}
    assert metric in used, f"no panel for {REQUIRED[metric]} ({metric})"
    assert metric in defined_metrics(), f"{metric} ({REQUIRED[metric]}) is not exported by ray_mlops"


def test_counters_are_rated_and_histograms_are_quantiles(dashboard):
    for expr in _exprs(dashboard):
        for name in re.findall(r"ray_ray_mlops_[a-z0-9_]+_total\b", expr):
            assert re.search(rf"(rate|increase)\({name}\b", expr), expr
        for name in re.findall(r"ray_ray_mlops_[a-z0-9_]+_bucket\b", expr):
            assert "histogram_quantile(" in expr and re.search(r"by \([^)]*\ble\b", expr), expr
