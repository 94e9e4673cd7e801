"""Shared fixtures: one real local Ray per test session, started only when a test asks.

Tests that need Ray request ``ray_session``; pure tests (statistics, config, storage)
never pay Ray's start-up. Multi-node tests build their own ``ray.cluster_utils.Cluster``
and must not run while ``ray_session`` is up (they shut it down first via ``no_ray``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import free_port, wait_for

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

NAMESPACE = "ray_mlops"
# Ray workers import what tests hand them (a toy source type, a user-style estimator) by
# module name, as a user's own plugin must be importable on every node: put tests/ on
# their path (they inherit this process's environment).
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(Path(__file__).resolve().parent)) if p)


def _start_local_ray() -> None:
    import ray

    from ray_mlops.runtime import local_system_config

    if ray.is_initialized():
        return
    ray.init(
        address="local",  # never join a cluster another test or session recorded in /tmp/ray
        num_cpus=2,
        namespace=NAMESPACE,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        ignore_reinit_error=True,
        _system_config=local_system_config(2),  # as an embedded Ray of ray_mlops: idle workers for each pool
    )


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray on 2 CPUs, shared by the whole test session."""
    import ray

    _start_local_ray()
    yield ray
    ray.shutdown()


@pytest.fixture
def no_ray():
    """Shut the shared Ray down (for tests that build their own multi-node cluster)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto in server mode) on loopback; yields its endpoint."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def _up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return proc.poll() is not None

    wait_for(_up, timeout=30, message="moto server")
    if proc.poll() is not None:
        raise RuntimeError("moto server did not start")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the loopback S3 server; yields an ``s3://`` storage URI."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}/store?endpoint_override={s3_server.split('//')[1]}&scheme=http&region=us-east-1"


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


# -- sample data, generated and ingested once per session ----------------------------
SAMPLE_ENTITIES = 1500


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    """The sample multi-format dataset (seed 0) in a session folder."""
    from ray_mlops.data.generate import GenerateSpec, generate

    root = tmp_path_factory.mktemp("sample") / "data"
    generate(root, GenerateSpec(entities=SAMPLE_ENTITIES, seed=0))
    return root


@pytest.fixture(scope="session")
def sample_config(sample_data, tmp_path_factory):
    """The default config pointed at the session's sample data and a session storage."""
    from ray_mlops.config import load_config

    storage = tmp_path_factory.mktemp("store")
    return load_config(overrides={"data.root": str(sample_data), "storage": str(storage)})


@pytest.fixture(scope="session")
def sample_ingest(ray_session, sample_config):
    """The sample data ingested once: ``(config, storage, IngestResult)``."""
    from ray_mlops.data.ingest import ingest
    from ray_mlops.storage import Storage

    storage = Storage(sample_config.storage)
    return sample_config, storage, ingest(sample_config, storage)


# Session fixtures of the helper modules are registered here, once: imported into several
# test modules instead, each module would get (and build) its own "session" instance.
from monitor_fixtures import monitored  # noqa: E402,F401
from serve_fixtures import serve_instance, served_model  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    """Run multi-node tests last: they stop the shared local Ray to build their own cluster."""
    items.sort(key=lambda item: item.get_closest_marker("multinode") is not None)


# Raylets are declared dead after about 1.5 s of failed health checks (default: ~15 s),
# so node-loss tests see the loss, and its recovery, quickly.
FAST_NODE_FAILURE = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}


@contextlib.contextmanager
def local_cluster(head_cpus: float = 1, worker_cpus: tuple[float, ...] = ()):
    """A ``ray.cluster_utils.Cluster`` on loopback with the driver connected to it.

    ``ray.init(address=...)`` rewrites a loopback address to the machine's own IP unless
    Ray believes it is single-host, so that check is switched off while it runs.
    """
    import ray
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": head_cpus, "node_ip_address": "127.0.0.1", "include_dashboard": False,
            "_system_config": FAST_NODE_FAILURE})
        try:
            for cpus in worker_cpus:
                cluster.add_node(num_cpus=cpus, node_ip_address="127.0.0.1")
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


@pytest.fixture
def two_node_cluster(no_ray):
    """Two raylets on this machine (1 CPU each), loopback only, with the driver connected."""
    with local_cluster(head_cpus=1, worker_cpus=(1,)) as cluster:
        yield cluster


# -- figures that tests measure (failed requests, recovery times), printed at the end -----
FIGURES: list[str] = []


@pytest.fixture
def report_figure():
    """``report_figure("...")``: a measured figure for the end-of-run summary."""
    return FIGURES.append


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("measured figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
