"""Replicas under load: autoscaling up and back down, and a killed replica is replaced."""

from __future__ import annotations

import ray

from helpers import wait_for
from serve_fixtures import Load, raw_instances, serve_config_for, served_model, serve_instance  # noqa: F401

from ray_mlops.serve import deploy as serving

CLIENTS = 8


def _replicas(name: str) -> list[dict]:
    details = serving._app_details(name) or {}
    replicas = details.get("deployments", {}).get(serving.DEPLOYMENT, {}).get("replicas", [])
    return [r for r in replicas if serving._plain(r.get("state")) == "RUNNING"]


def test_autoscaling_adds_a_replica_under_load_and_removes_it_after(served_model, serve_instance):  # noqa: F811
    from ray import serve

    config = serve_config_for(
        served_model, serve_instance, app_name="autoscaled", route_prefix="/autoscaled", num_cpus=0.25,
        min_replicas=1, max_replicas=2, target_ongoing_requests=1, upscale_delay_s=0.5, downscale_delay_s=2,
        metrics_interval_s=0.5, look_back_period_s=1, max_batch_size=4, prediction_log=False)
    url = serving.deploy(config)
    try:
        assert len(_replicas("autoscaled")) == 1
        with Load(url, raw_instances(served_model, 20, seed=2), clients=CLIENTS) as load:
            wait_for(lambda: len(_replicas("autoscaled")) == 2, timeout=60, interval=0.5, message="a second replica")
        assert load.failures() == []
        wait_for(lambda: len(_replicas("autoscaled")) == 1, timeout=60, interval=0.5, message="scale back down")
    finally:
        serve.delete("autoscaled")


def test_a_killed_replica_is_replaced_and_only_in_flight_requests_fail(served_model, serve_instance):  # noqa: F811
    from ray import serve

    config = serve_config_for(served_model, serve_instance, app_name="killable", route_prefix="/killable",
                              num_cpus=0.25, min_replicas=2, max_replicas=2, prediction_log=False)
    url = serving.deploy(config)
    try:
        before = wait_for(lambda: _replicas("killable") if len(_replicas("killable")) == 2 else None, timeout=60)
        victim = before[0]
        with Load(url, raw_instances(served_model, 20, seed=3), clients=CLIENTS) as load:
            wait_for(lambda: load.count() >= 20, timeout=60, message="load running")
            ray.kill(ray.get_actor(victim["actor_name"], namespace="serve"), no_restart=True)
            killed_at = load.count()

            def replaced():
                ids = {r["replica_id"] for r in _replicas("killable")}
                return len(ids) == 2 and victim["replica_id"] not in ids

            wait_for(replaced, timeout=90, interval=0.5, message="a replacement replica")
            wait_for(lambda: load.count() >= killed_at + 40, timeout=60, message="requests after the kill")
        failures = load.failures()
        print(f"replica killed under load: {len(failures)} of {len(load.results)} requests failed: {failures[:3]}")
        assert len(failures) <= CLIENTS, failures[:3]  # at most the requests in flight on the victim
        assert len(failures) / len(load.results) < 0.1
        assert all(status == 200 for status, _ in load.results[-10:])
    finally:
        serve.delete("killable")
