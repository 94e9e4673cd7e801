"""The head's GCS restarts under traffic: GCS fault tolerance on a real external Redis.

A real ``redis-server`` (the Debian package, installed by ``scripts/system-deps``) on a
free loopback port with a password; a ``ray.cluster_utils.Cluster`` head started the way
``cluster.yaml`` starts one (``RAY_REDIS_ADDRESS``, the Redis password, an external
storage namespace); the Serve app and the detached monitor on it, clients posting
``/predict``. The GCS server process is killed (SIGKILL) mid-traffic and started again,
as a supervisor would. Serve keeps answering (only in-flight requests may fail), the
detached monitor is the same actor with every window it had, and after the GCS is back
drifted traffic makes the loop retrain (a new detached actor: the GCS works again).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

import pytest

from conftest import FAST_NODE_FAILURE, NAMESPACE
from helpers import free_port, wait_for
from serve_fixtures import Load, build_served_model, raw_instances, serve_config_for
from train_fixtures import tiny_config

pytestmark = [pytest.mark.multinode, pytest.mark.slow]  # its own cluster: runs last

GCS_DOWN_REQUESTS = 30  # successful requests required while the GCS is down...
GCS_DOWN_S = 5.0  # ...and for at least this long


@dataclass(frozen=True)
class Redis:
    address: str  # host:port
    password: str


def _redis(port: int, password: str, command: str = "") -> str:
    """Replies to ``AUTH``, ``command`` and a final ``PING`` (read up to its ``+PONG``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(f"AUTH {password}\r\n{command}{chr(13) + chr(10) if command else ''}PING\r\n".encode())
        reply = b""
        while not reply.endswith(b"+PONG\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply.decode(errors="replace")


def _redis_answers(port: int, password: str) -> bool:
    try:
        return _redis(port, password).startswith("+OK")
    except OSError:
        return False


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on loopback with a password and no persistence; stopped afterwards."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: run scripts/system-deps (apt-get install redis-server)"
    port, password = free_port(), secrets.token_hex(12)
    log = (tmp_path / "redis.log").open("w")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password, "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        wait_for(lambda: proc.poll() is not None or _redis_answers(port, password), timeout=30, message="redis")
        assert proc.poll() is None, (tmp_path / "redis.log").read_text()[-2000:]
        yield Redis(f"127.0.0.1:{port}", password)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@contextlib.contextmanager
def fault_tolerant_head(redis: Redis, namespace: str):
    """A one-node Cluster whose GCS keeps its tables in ``redis``, the driver connected."""
    import ray
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # loopback: see conftest.local_cluster
        patch.setenv("RAY_REDIS_ADDRESS", redis.address)
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False,
            "redis_password": redis.password,
            "_system_config": {**FAST_NODE_FAILURE, "external_storage_namespace": namespace}})
        try:
            ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


def _redis_keys(redis: Redis, namespace: str) -> int:
    """How many Redis keys hold this cluster's GCS tables (prefix ``RAY<namespace>@``)."""
    reply = _redis(int(redis.address.split(":")[1]), redis.password, f"KEYS RAY{namespace}@*")
    return int(reply.split("*", 1)[1].split("\r\n", 1)[0])


def _status(actor):
    import ray

    return ray.get(actor.status.remote(), timeout=60)


def shifted(instances: list[dict]) -> list[dict]:
    return [{**record, "age_years": record["age_years"] * 1.8 + 3} for record in instances]


def test_serve_and_the_monitor_survive_a_gcs_restart_and_the_loop_retrains(redis_server, no_ray, tmp_path,
                                                                         report_figure):
    import ray
    from ray import serve

    from ray_mlops.loop import start_monitor, shutdown
    from ray_mlops.runtime import ensure_shared_storage
    from ray_mlops.serve import deploy as serving

    namespace = f"ray-mlops-test-{secrets.token_hex(4)}"
    with fault_tolerant_head(redis_server, namespace) as cluster:
        assert _redis_keys(redis_server, namespace) > 0  # the GCS writes its tables to Redis
        served = build_served_model(tmp_path / "served")
        ensure_shared_storage(served.config.storage)
        monitor = served.config.monitor.model_copy(update={
            "window_size": 40, "min_window": 10, "poll_interval_s": 0.2, "patience": 2,
            "retrain": served.config.monitor.retrain.model_copy(update={"num_samples": 2, "min_holdout_rows": 10})})
        config = serve_config_for(served, free_port(), num_cpus=0.25, min_replicas=1, max_replicas=1,
                                  log_flush_interval_s=0.3, log_flush_rows=20)
        config = config.model_copy(update={"monitor": monitor, "train": tiny_config(num_samples=2,
                                                                                     max_concurrent_trials=1)})
        try:
            url = serving.deploy(config)
            actor = start_monitor(config)
            normal = raw_instances(served, 40, seed=11)
            with Load(url, normal, clients=4) as load:
                wait_for(lambda: _status(actor).windows >= 2, timeout=120, message="two windows before the kill")
                before = _status(actor)
                head = cluster.head_node
                killed = time.monotonic()
                head.kill_gcs_server()
                served_while_down = load.count()
                wait_for(lambda: time.monotonic() - killed >= GCS_DOWN_S and sum(
                    1 for s, _ in load.results[served_while_down:] if s == 200) >= GCS_DOWN_REQUESTS,
                    timeout=60, message=f"{GCS_DOWN_REQUESTS} answers while the GCS is down")
                down_ok = sum(1 for s, _ in load.results[served_while_down:] if s == 200)
                head.start_gcs_server()
                restarted = time.monotonic()
                wait_for(lambda: _gcs_answers(config), timeout=60, message="the GCS answering again")
                back = time.monotonic()
                after_count = load.count()
                wait_for(lambda: load.count() >= after_count + 40, timeout=60, message="traffic after the restart")
            failures = load.failures()
            gap = load.longest_gap_between_successes()
            answered = len(load.success_times)  # one instance per request: one prediction record each
            after = wait_for(lambda: (s := _status(actor)).records == answered and s, timeout=60,
                             message=f"the monitor to hold all {answered} records ({_status(actor).records})")
            assert serve.status().applications[config.serve.app_name].status == "RUNNING"
            report_figure(
                f"GCS restart (Redis-backed): {len(failures)}/{len(load.results)} requests failed, longest gap "
                f"between successes {gap:.2f} s, {down_ok} answered while the GCS was down "
                f"({restarted - killed:.1f} s down, GCS answering {back - restarted:.1f} s after its restart); "
                f"monitor windows {before.windows} -> {after.windows}, records {after.records}/{answered}, "
                f"restarts {after.restarts}")
            assert len(failures) <= 4, failures[:5]  # only requests in flight (4 clients) may fail
            assert after.restarts == before.restarts and after.windows > before.windows
            indices = [v.index for v in after.last_verdicts]
            assert indices == list(range(indices[0], indices[0] + len(indices)))  # no window lost

            drifted = shifted(raw_instances(served, 40, seed=12))
            retrains_before = len(after.retrain_history)
            with Load(url, drifted, clients=2):
                wait_for(lambda: _status(actor).retrain_active or _finished(_status(actor), retrains_before),
                         timeout=120, message="a retraining launched after the restart")
            started = time.monotonic()
            final = wait_for(lambda: _finished(_status(actor), retrains_before), timeout=300,
                             message="the retraining's outcome")
            report_figure(f"GCS restart: the retraining launched after the restart ended {final.status!r} "
                          f"in {time.monotonic() - started:.0f} s")
            assert final.status in ("promoted", "rejected"), final
        finally:
            shutdown(config)
            serve.shutdown()


def _finished(status, before: int):
    done = status.retrain_history[before:]
    return done[-1] if done else None


def _gcs_answers(config) -> bool:
    import ray

    from ray_mlops.monitor.actor import MONITOR_ACTOR

    try:
        return ray.get_actor(MONITOR_ACTOR, namespace=config.ray.namespace) is not None
    except Exception:  # still reconnecting
        return False
