"""Our metrics appear, by name, on a node's Prometheus endpoint (Ray's own exporter).

A fresh local Ray with ``_metrics_export_port`` on a free port (exporting every second);
the real code paths record the metrics: a registry register + promote (in this driver), the Serve app answering a
good and a bad ``/predict`` (in its replica), and the monitor's metric hook fed a window
and a retraining outcome (when the monitor module is present). Ray exports on an
interval, so the scrape is polled with a bound.
"""

from __future__ import annotations

import re
import time
import urllib.request

import httpx
import pytest

from conftest import NAMESPACE
from helpers import free_port, metric_hook_actor
from serve_fixtures import raw_instances, register_version, serve_config_for

pytestmark = pytest.mark.multinode  # its own Ray: runs last, after the shared one stops

SCRAPE_TIMEOUT_S = 90


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def samples(text: str, name: str) -> list[tuple[dict, float]]:
    """``[(labels, value)]`` of every sample of ``name`` in a Prometheus text exposition."""
    found = []
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m:
            found.append((dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))), float(m.group(2))))
    return found


def wait_for_samples(port: int, wanted: dict[str, dict], timeout: float = SCRAPE_TIMEOUT_S) -> str:
    """Poll until every metric in ``wanted`` has a sample whose labels include the given ones."""
    deadline, missing, text = time.monotonic() + timeout, dict(wanted), ""
    while missing and time.monotonic() < deadline:
        text = scrape(port)
        missing = {name: labels for name, labels in missing.items()
                   if not any(labels.items() <= got.items() for got, _ in samples(text, name))}
        if missing:
            time.sleep(1)
    assert not missing, f"not exported within {timeout}s: {missing}"
    return text


@pytest.fixture
def ray_with_metrics(no_ray):
    import ray

    port = free_port()
    ray.init(address="local", num_cpus=2, namespace=NAMESPACE, include_dashboard=False, _node_ip_address="127.0.0.1",
             _metrics_export_port=port, log_to_driver=False,
             _system_config={"metrics_report_interval_ms": 1000})  # export every second, not every 10
    try:
        yield port
    finally:
        ray.shutdown()


def _monitor_hook():
    try:
        from ray_mlops.monitor.actor import export_metrics
    except ImportError:
        return None
    return export_metrics


def test_registry_serving_and_drift_metrics_are_scraped_by_name(served_model, ray_with_metrics):  # noqa: F811
    import ray
    from ray import serve

    from ray_mlops.runtime import ensure_shared_storage
    from ray_mlops.serve import deploy as serving

    port = ray_with_metrics
    served = served_model  # built on the shared Ray before this one started
    version = register_version(served, C=0.5)  # registered and promoted in this Ray: counted here
    ensure_shared_storage(served.config.storage)  # one host: a local folder is fine
    http_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    try:
        config = serve_config_for(served, http_port, num_cpus=0.25, min_replicas=1, max_replicas=1)
        url = serving.deploy(config)
        good = httpx.post(f"{url}/predict", json={"instances": raw_instances(served, 2)}, timeout=60)
        bad = httpx.post(f"{url}/predict", json={"instances": [{"age_years": "old"}]}, timeout=60)
        assert good.status_code == 200 and 400 <= bad.status_code < 500, (good.text, bad.text)

        wanted = {
            "ray_ray_mlops_registry_events_total": {"kind": "promote", "model": served.config.model_name},
            "ray_ray_mlops_requests_total": {"route": "/predict", "status": "200"},
            "ray_ray_mlops_request_errors_total": {"route": "/predict", "status": str(bad.status_code)},
            "ray_ray_mlops_request_latency_ms_bucket": {"route": "/predict"},
            "ray_ray_mlops_serving_version": {"version": version},
            "ray_ray_mlops_predictions_total": {"version": version},
        }
        hook = _monitor_hook()
        if hook is not None:  # the monitor's real metric hook, in a live actor like the monitor's
            window = {"drift": True, "p_value": 0.001, "alarm": True,
                      "features": {"age_years": {"p_value": 0.0004}, "firmware": {"p_value": 0.7}}}
            emitter = metric_hook_actor().remote()
            ray.get(emitter.emit.remote([("window", window), ("retrain", {"status": "promoted"})]))
            wanted |= {
                "ray_ray_mlops_drift_p_value": {"feature": "age_years"},
                "ray_ray_mlops_monitor_windows_total": {"drift": "true"},
                "ray_ray_mlops_retrains_total": {"outcome": "promoted"},
            }
        text = wait_for_samples(port, wanted)
        serving = [v for labels, v in samples(text, "ray_ray_mlops_serving_version") if labels["version"] == version]
        assert max(serving) == 1.0
        if hook is not None:
            p = {labels["feature"]: v for labels, v in samples(text, "ray_ray_mlops_drift_p_value")}
            assert p["age_years"] == pytest.approx(0.0004) and p["firmware"] == pytest.approx(0.7)
    finally:
        for name in list(serve.status().applications):
            serve.delete(name)
        serve.shutdown()
