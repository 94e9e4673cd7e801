"""Replicas under load: autoscaling up and back down.

A replica lost under load (with the node it ran on) is tested in test_faults.py."""

from __future__ import annotations

import pytest

from helpers import wait_for
from serve_fixtures import Load, raw_instances, running_replicas, serve_config_for

from ray_mlops.serve import deploy as serving

pytestmark = pytest.mark.slow  # a second replica under load and back: ~30 s; test_serve_api keeps the Serve smoke in the fast lane

CLIENTS = 8


def test_autoscaling_adds_a_replica_under_load_and_removes_it_after(served_model, serve_instance):  # noqa: F811
    from ray import serve

    config = serve_config_for(
        served_model, serve_instance, app_name="autoscaled", route_prefix="/autoscaled", num_cpus=0.25,
        min_replicas=1, max_replicas=2, target_ongoing_requests=1, upscale_delay_s=0.5, downscale_delay_s=2,
        metrics_interval_s=0.5, look_back_period_s=1, max_batch_size=4, prediction_log=False)
    url = serving.deploy(config)
    try:
        assert len(running_replicas("autoscaled")) == 1
        with Load(url, raw_instances(served_model, 20, seed=2), clients=CLIENTS) as load:
            wait_for(lambda: len(running_replicas("autoscaled")) == 2, timeout=60, interval=0.5, message="a second replica")
        assert load.failures() == []
        wait_for(lambda: len(running_replicas("autoscaled")) == 1, timeout=60, interval=0.5, message="scale back down")
    finally:
        serve.delete("autoscaled")
