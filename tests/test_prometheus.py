"""The Grafana dashboard against a real Prometheus scraping a real Ray.

A fresh local Ray with its dashboard (which writes the Prometheus config and keeps the
file-based service discovery up to date) and ``_metrics_export_port`` on a free port; a
real ``prometheus`` (the Debian package, installed by ``scripts/bootstrap``) started with
the ``prometheus.yml`` Ray wrote, unchanged; the Serve app answering good and bad
``/predict`` traffic shifted away from the reference (so the real monitor, fed by the
replicas, tests drifting windows), a registry promotion and rollback, a failed swap (a
tampered artifact) and a bad record batch to the monitor. Retraining and automatic
rollback outcomes come from the monitor's own metric hook in an actor (a full retraining
is not needed to prove a panel's query). After the traffic stops, the gauge panels keep
their data for longer than Ray keeps a gauge nobody sets again. Then **every** PromQL expression of
``configs/grafana/ray_mlops_dashboard.json`` is evaluated through Prometheus's HTTP API,
Grafana's template variables resolved, and each must return data.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from conftest import NAMESPACE
from helpers import free_port, metric_hook_actor, wait_for
from serve_fixtures import Load, build_served_model, raw_instances, register_version, serve_config_for

pytestmark = [pytest.mark.multinode, pytest.mark.slow]  # its own Ray (with the dashboard): runs last

DASHBOARD = Path(__file__).resolve().parents[1] / "configs" / "grafana" / "ray_mlops_dashboard.json"
# Grafana's built-in variables, as Grafana resolves them for a 1 h dashboard range over a
# Prometheus data source with the default 15 s scrape interval ($__rate_interval = 4 x 15 s).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
DATA_TIMEOUT_S = 150
GAUGES = ("ray_ray_mlops_serving_version", "ray_ray_mlops_drift_p_value", "ray_ray_mlops_monitor_window_p_value",
          "ray_ray_mlops_prediction_log_buffered")
QUIET_S = 35  # longer than Ray keeps a gauge that is not set again (~20 s)


@dataclass
class RayHead:
    temp_dir: Path
    metrics_port: int

    @property
    def session(self) -> Path:
        return self.temp_dir / "session_latest"


@dataclass
class Prometheus:
    url: str
    config: Path

    def query(self, expr: str) -> list[dict]:
        """An instant query; the result vector (raises when Prometheus refuses the expression)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]


def resolve(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unresolved template variable in {expr}"
    return expr


def dashboard_targets() -> list[tuple[str, str]]:
    """``[(panel title, expression)]`` for every target of every panel (rows unfolded)."""
    panels = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels += [panel, *panel.get("panels", [])]
    return [(p["title"], t["expr"]) for p in panels if p.get("type") != "row" for t in p["targets"]]


@pytest.fixture
def ray_head(no_ray):
    """A local Ray with its dashboard, in its own short temp dir (Ray's socket paths are bounded)."""
    import ray

    temp_dir = Path(tempfile.mkdtemp(prefix="rprom", dir="/tmp"))
    metrics_port = free_port()
    ray.init(address="local", num_cpus=2, namespace=NAMESPACE, _node_ip_address="127.0.0.1",
             include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=free_port(),
             _temp_dir=str(temp_dir), _metrics_export_port=metrics_port, log_to_driver=False,
             _system_config={"metrics_report_interval_ms": 1000})
    try:
        yield RayHead(temp_dir, metrics_port)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _discovered(head: RayHead) -> bool:
    """Ray's service-discovery file lists this node's metrics endpoint."""
    path = head.session / "prom_metrics_service_discovery.json"
    try:
        groups = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return any(t.endswith(f":{head.metrics_port}") for g in groups for t in g["targets"])


@pytest.fixture
def prometheus(ray_head, tmp_path):
    """A real Prometheus on loopback with the scrape config Ray wrote; stopped afterwards."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run scripts/bootstrap (apt-get install prometheus)"
    config = ray_head.session / "metrics" / "prometheus" / "prometheus.yml"
    wait_for(config.exists, timeout=60, message=f"Ray to write {config}")
    wait_for(lambda: _discovered(ray_head), timeout=60, message="the node in Ray's service discovery")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1", GOMAXPROCS="1"))
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
        try:
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=60, message="prometheus ready")
        yield Prometheus(url, config)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def shifted(instances: list[dict]) -> list[dict]:
    """Covariate drift in the raw request: older machines."""
    return [{**record, "age_years": record["age_years"] * 1.8 + 3} for record in instances]


def _fail_a_swap(served, config) -> None:
    from ray_mlops.errors import ServingError
    from ray_mlops.serve import deploy as serving

    broken = register_version(served, C=2.0, promote=False)
    served.storage.write_bytes(f"registry/{config.model_name}/{broken}/model.skops", b"tampered")
    with pytest.raises(ServingError, match="sha256"):
        serving.swap(config, broken)


def _missing(prom: Prometheus) -> dict[str, list[dict]]:
    """Expressions without data (a quantile must be a number: NaN means no observations)."""
    missing = {}
    for title, expr in dashboard_targets():
        result = prom.query(resolve(expr))
        values = [float(series["value"][1]) for series in result]
        if not values or ("histogram_quantile" in expr and not any(math.isfinite(v) for v in values)):
            missing[f"{title}: {expr}"] = result
    return missing


def _gauges_stay_visible(prom: Prometheus) -> None:
    """With no traffic (no new set), every gauge panel keeps its data for :data:`QUIET_S`.

    Ray drops a gauge from the endpoint ~20 s after its last set; ours are held.
    """
    quiet = time.monotonic()

    def held() -> bool:
        for title, expr in dashboard_targets():
            if any(gauge in expr for gauge in GAUGES):
                assert prom.query(resolve(expr)), (
                    f"{title}: {expr} went blank {time.monotonic() - quiet:.0f} s after the traffic stopped")
        return time.monotonic() - quiet >= QUIET_S

    wait_for(held, timeout=QUIET_S + 30, interval=5, message="gauges through a quiet period")


def test_every_dashboard_expression_returns_data_from_a_real_prometheus(ray_head, prometheus, tmp_path,
                                                                       report_figure):
    import ray
    from ray import serve

    from ray_mlops.monitor.actor import start_monitor, stop_monitor
    from ray_mlops.runtime import ensure_shared_storage
    from ray_mlops.serve import deploy as serving

    served = build_served_model(tmp_path / "served")
    ensure_shared_storage(served.config.storage)
    monitor = served.config.monitor.model_copy(update={
        "window_size": 40, "min_window": 10, "poll_interval_s": 0.2,
        "retrain": served.config.monitor.retrain.model_copy(update={"enabled": False})})
    config = serve_config_for(served, free_port(), num_cpus=0.25, min_replicas=1, max_replicas=1,
                              log_flush_interval_s=0.3, log_flush_rows=20)
    config = config.model_copy(update={"monitor": monitor})
    actor = start_monitor(config)
    try:
        url = serving.deploy(config)
        node = f'up{{job="ray", instance=~".*:{ray_head.metrics_port}"}}'  # found through Ray's discovery file
        wait_for(lambda: [s for s in prometheus.query(node) if s["value"][1] == "1"], timeout=60,
                 message=f"Prometheus scraping the node ({prometheus.query('up')})")

        served.registry.promote(register_version(served, C=0.5, promote=False), reason="prometheus test")
        served.registry.rollback("prometheus test")
        _fail_a_swap(served, config)
        assert ray.get(actor.receive.remote(pd.DataFrame({"x": [1.0]}))) == 0  # refused for its schema
        emitter = metric_hook_actor().remote()
        ray.get(emitter.emit.remote([("retrain", {"status": "promoted"}),
                                     ("rollback", {"outcome": "rolled_back"})]))

        instances = shifted(raw_instances(served, 40, seed=5))
        bad_instances = [{"age_years": "old"}]
        missing: dict = {}
        with Load(url, instances, clients=2, per_request=4) as load:
            def all_data() -> bool:
                httpx.post(f"{url}/predict", json={"instances": bad_instances}, timeout=30)
                missing.clear()
                missing.update(_missing(prometheus))
                return not missing

            try:
                wait_for(all_data, timeout=DATA_TIMEOUT_S, interval=5, message="data for every expression")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; no data for: {json.dumps(missing, indent=1)}") from None
        _gauges_stay_visible(prometheus)
        status = ray.get(actor.status.remote(), timeout=30)
        windows = prometheus.query('sum by (drift) (ray_ray_mlops_monitor_windows_total)')
        assert any(s["metric"].get("drift") == "true" for s in windows), windows
        report_figure(f"prometheus: {len(dashboard_targets())} dashboard expressions with data after "
                      f"{load.count()} requests; monitor windows {status.windows}")
    finally:
        stop_monitor(config)
        for name in list(serve.status().applications):
            serve.delete(name)
        serve.shutdown()
