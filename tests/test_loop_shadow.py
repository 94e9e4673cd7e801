"""The loop with shadow evaluation on the embedded Ray: drift → retrain → offline gate → shadow
in the real replicas → online paired gate on live /feedback labels → promote → probation.

The concept drifts: after the onset every label sent back is the opposite of what v1
answers. The retraining's search is injected (the real ingest, registration, gates, Serve
and monitor run): it returns v1's Pipeline with its decision flipped, the model that fits
the new concept, so the online test has a clear answer and the test stays fast.
"""

from __future__ import annotations

import copy

import httpx
import pytest

from helpers import wait_for
from serve_fixtures import ClientThreads, build_served_model, raw_instances, serve_config_for


def flipped_search(frame, schema, train_config, storage, name, **kwargs):
    """A 'search' whose winner is production's Pipeline with its decision reversed (runs in the retrainer)."""
    import pandas as pd

    from ray_mlops.config import load_config
    from ray_mlops.registry import Registry
    from ray_mlops.train.search import SearchResult

    model = copy.deepcopy(Registry(storage, load_config().model_name).load("production"))
    last = model.steps[-1][1]
    last.coef_, last.intercept_ = -last.coef_, -last.intercept_
    return SearchResult(family="logistic_regression", params={"C": 1.0}, metrics={"roc_auc": 0.9}, model=model,
                        trials=pd.DataFrame({"trial": [0]}), validation=frame.head(50), metric="roc_auc",
                        mode="max", seed=0, name=name, experiment_path="", train_rows=len(frame))


class DriftedClients(ClientThreads):
    """Clients posting /predict, then /feedback with the opposite of each answer (the new concept)."""

    def __init__(self, url: str, instances: list[dict], clients: int = 3):
        super().__init__(clients)
        self.url, self.instances = url, instances
        self.statuses: list[int] = []

    def _run(self, seed: int) -> None:
        i = seed
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                batch = [self.instances[(i + k) % len(self.instances)] for k in range(2)]
                i += 3
                try:
                    r = http.post(f"{self.url}/predict", json={"instances": batch})
                    status = r.status_code
                    if status == 200:
                        body = r.json()
                        flipped = [1 - p for p in body["predictions"]]
                        status = http.post(f"{self.url}/feedback", json={"request_id": body["request_id"],
                                                                         "labels": flipped}).status_code
                except httpx.HTTPError:
                    status = 0
                with self._lock:
                    self.statuses.append(status)


def _shutdown(config) -> None:
    """Stop the monitor (last checkpoint), then remove the app; on a loaded machine the replica's
    graceful shutdown can outlast Serve's blocking delete (60 s), so its removal is awaited longer."""
    from ray import serve

    from ray_mlops.monitor.actor import stop_monitor

    stop_monitor(config)
    serve.delete(config.serve.app_name, _blocking=False)
    wait_for(lambda: config.serve.app_name not in serve.status().applications, timeout=180,
             message="the app removed")


@pytest.mark.slow
def test_drift_retrain_shadow_online_gate_promote(ray_session, serve_instance, tmp_path):
    import ray

    from ray_mlops import loop
    from ray_mlops.contracts import read_log
    from ray_mlops.serve import deploy as serving

    served = build_served_model(tmp_path / "loop", entities=200)
    config = serve_config_for(served, serve_instance, num_cpus=0.25, min_replicas=1, max_replicas=1,
                              log_flush_interval_s=0.3, log_flush_rows=20, app_name="shadow_loop",
                              route_prefix="/shadow_loop")
    raw = config.model_dump(mode="json")
    raw["monitor"].update(window_size=40, min_window=10, min_labels=20, patience=1, cooldown=0, poll_interval_s=0.2,
                          checkpoint_interval_s=0.5, probation_windows=2)
    raw["monitor"]["retrain"].update(min_holdout_rows=20, log_train_fraction=0.5)
    raw["monitor"]["shadow"].update(enabled=True, windows=3, min_rows=60, max_windows=30)
    config = type(config).model_validate(raw)
    url = serving.deploy(config)
    monitor = loop.start_monitor(config, search=flipped_search)

    def status():
        return ray.get(monitor.status.remote(), timeout=30)

    try:
        with DriftedClients(url, raw_instances(served, 40, seed=4)) as clients:
            retrained = wait_for(lambda: status().retrain_history, timeout=240, message="the retraining")
            assert retrained[-1].status == "shadowing", retrained[-1]
            ended = wait_for(lambda: status().shadow_history, timeout=240, message="the online gate")[-1]
            wait_for(lambda: httpx.get(f"{url}/health").json()["model_version"] == "v2", timeout=60,
                     message="v2 served")
            seen = len(clients.statuses)
            wait_for(lambda: len(clients.statuses) >= seen + 10, timeout=60, message="requests after the promotion")
        after = status()
    finally:
        _shutdown(config)
    assert ended.status == "promoted" and ended.candidate == "v2", ended
    test = ended.test
    assert test["test"] == "mcnemar_exact" and test["passed"] and test["rows"] >= 60 and test["estimate"] > 0.5
    assert served.registry.get_alias("production") == "v2"
    assert set(clients.statuses) == {200}  # no failed request across shadow load and promotion
    assert (after.probation is not None and after.probation.version == "v2") or after.rollback_count == 0
    log = read_log(served.storage)
    shadowed = log[log["shadow_version"] == "v2"]
    assert len(shadowed) >= 60 and set(shadowed["model_version"]) == {"v1"}
    assert (shadowed["shadow_prediction"].astype(int) == 1 - shadowed["prediction"].astype(int)).all()
    assert set(log[log["model_version"] == "v2"]["shadow_version"].dropna()) == set()
