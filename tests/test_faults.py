"""Node loss on a multi-node cluster: every stage recovers, nothing is lost or doubled.

One ``ray.cluster_utils.Cluster`` for the module (a 1-CPU head raylet on this machine);
each test adds a worker raylet, puts work on it and crashes it (``allow_graceful=False``:
SIGKILL to its raylet and workers, like a host that disappears). Health checks are
tightened (``conftest.FAST_NODE_FAILURE``) so Ray declares the node dead in about 1.5 s.
Each test reports what it measured (failed requests, recovery time) in the run's
"measured figures" summary.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from conftest import local_cluster
from helpers import free_port, wait_for
from monitor_fixtures import fresh_storage, records, shifted
from serve_fixtures import Load, raw_instances, running_replicas, serve_config_for
from train_fixtures import make_table, tiny_config

from ray_mlops.monitor.store import MonitorStore

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(240)]


# -- the cluster and its faults -----------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    with local_cluster(head_cpus=1) as started:
        yield started


@pytest.fixture
def add_worker(cluster):
    """``add_worker(cpus)``: a new worker raylet; any left alive is removed after the test."""
    added = []

    def add(cpus: float = 1.0):
        node = cluster.add_node(num_cpus=cpus, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        added.append(node)
        return node

    yield add
    for node in added:
        if node in cluster.worker_nodes:
            cluster.remove_node(node)


def crash(cluster, node) -> float:
    """Kill every process of ``node`` at once; returns when it happened (monotonic)."""
    at = time.monotonic()
    cluster.remove_node(node, allow_graceful=False)
    return at


def alive_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


class Crasher(threading.Thread):
    """Crashes ``node`` from a background thread as soon as ``ready()`` is true."""

    def __init__(self, cluster, node, ready: Callable[[], bool], timeout: float = 120):
        super().__init__(daemon=True)
        self.cluster, self.node, self.ready, self.timeout = cluster, node, ready, timeout
        self.crashed_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            wait_for(self.ready, timeout=self.timeout, interval=0.05, message="the moment to crash the node")
            self.crashed_at = crash(self.cluster, self.node)
        except BaseException as exc:  # surfaced by the test after join()
            self.error = exc


@ray.remote(num_cpus=0)
class Placeholder:
    def ready(self) -> bool:
        return True


def occupy(node_id: str, cpus: float) -> Callable[[], None]:
    """Hold ``cpus`` on a node so new work lands elsewhere; returns the release."""
    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
    holder = Placeholder.options(num_cpus=cpus, scheduling_strategy=strategy).remote()
    ray.get(holder.ready.remote(), timeout=60)
    return lambda: ray.kill(holder)


# -- training ---------------------------------------------------------------------------
def _recorded_trial(folder: str, seconds: float):
    """The real trial, after writing which node each attempt started on and a pause."""
    from ray import tune

    from ray_mlops.train.search import train_trial

    def trial(config, data):
        node = ray.get_runtime_context().get_node_id()
        with open(Path(folder, f"{tune.get_context().get_trial_id()}.starts"), "a") as starts:
            starts.write(node + "\n")
        time.sleep(seconds)
        train_trial(config, data)

    return trial


def _attempts(folder: Path) -> dict[str, list[str]]:
    return {p.name.removesuffix(".starts"): p.read_text().split() for p in folder.glob("*.starts")}


def test_search_completes_and_the_lost_trial_reruns_when_its_node_dies(cluster, add_worker, tmp_path,
                                                                       report_figure):
    from ray_mlops.storage import Storage
    from ray_mlops.train.search import run_search

    head = cluster.head_node.node_id
    worker = add_worker()
    frame, schema = make_table()
    starts = tmp_path / "starts"
    starts.mkdir()
    on_worker = lambda: any(worker.node_id in nodes for nodes in _attempts(starts).values())  # noqa: E731
    crasher = Crasher(cluster, worker, on_worker)
    crasher.start()
    started = time.monotonic()
    result = run_search(frame, schema, tiny_config(num_samples=4, max_failures=2), Storage(str(tmp_path / "store")),
                        trial_fn=_recorded_trial(str(starts), seconds=3.0))
    finished = time.monotonic()
    crasher.join(timeout=30)
    assert crasher.error is None and crasher.crashed_at is not None, crasher.error

    trials = result.trials.set_index("trial_id")
    assert len(trials) == 4 and (trials["status"] == "ok").all(), trials[["status", "error"]]
    attempts = _attempts(starts)
    lost = sorted(t for t, nodes in attempts.items() if worker.node_id in nodes)
    assert lost, attempts
    for trial_id in lost:
        assert attempts[trial_id][-1] == head and len(attempts[trial_id]) >= 2, attempts[trial_id]
        assert trials.loc[trial_id, "node_id"] == head  # its reported metrics come from the rerun
    assert set(trials["node_id"]) == {head}  # every finished attempt ran on the survivor
    report_figure(f"tune, worker node lost mid-trial: {len(lost)} trial(s) rerun on the head, 4/4 trials ok; "
                  f"search finished {finished - crasher.crashed_at:.1f} s after the loss "
                  f"({finished - started:.1f} s in all)")


# -- ingestion --------------------------------------------------------------------------
INGEST_ENTITIES = 800
#: The sources the node-loss ingest reads: tables and events (one shuffle by bucket for all four).
INGEST_MODALITIES = ("table", "events")
#: The node-loss ingest's data.stall_timeout_s: Ray Data's hash shuffle (2.60) cannot rebuild shards lost with a
#: node once its reduce runs, so an ingest that loses one then must fail clearly within this bound, publishing nothing.
INGEST_STALL_S = 45


def test_ingest_with_a_node_lost_mid_shuffle_completes_or_fails_clearly_in_bounded_time(cluster, add_worker, tmp_path,
                                                                                       report_figure):
    from ray_mlops.config import config_from_dict
    from ray_mlops.data.generate import GenerateSpec, generate, sample_config
    from ray_mlops.data.ingest import ingest
    from ray_mlops.data.schema import latest_ingest, read_feature_table
    from ray_mlops.errors import DataError
    from ray_mlops.storage import Storage

    worker = add_worker()
    root, store = tmp_path / "data", tmp_path / "store"
    generate(root, GenerateSpec(entities=INGEST_ENTITIES, seed=5, modalities=INGEST_MODALITIES))
    config = config_from_dict(sample_config({"storage": str(store), "data": {"stall_timeout_s": INGEST_STALL_S}}, root,
                                            INGEST_MODALITIES))
    storage = Storage(config.storage)
    joining = lambda: any(store.glob("features/*/run-*/_counts/*/*.json"))  # noqa: E731  the join step is running
    crasher = Crasher(cluster, worker, joining)
    crasher.start()
    started = time.monotonic()
    try:
        result = ingest(config, storage)
    except DataError as exc:  # a clear failure is allowed; a table that looks complete is not
        crasher.join(timeout=30)
        with pytest.raises(DataError):
            latest_ingest(storage)
        outcome = f"failed clearly ({str(exc)[:120]}), no table published"
    else:
        crasher.join(timeout=30)
        table = read_feature_table(storage)
        assert result.rows == len(table) == INGEST_ENTITIES
        assert table[result.schema.entity_key].is_unique
        assert all(c["quarantined"] == 0 for c in result.counts.values()), result.counts
        assert latest_ingest(storage).fingerprint == result.fingerprint
        outcome = f"completed with all {result.rows} rows, none duplicated"
    finished = time.monotonic()
    assert crasher.error is None and crasher.crashed_at is not None, crasher.error
    assert crasher.crashed_at < finished and worker.node_id not in alive_nodes()
    assert finished - crasher.crashed_at < INGEST_STALL_S + 60
    report_figure(f"ingest, worker node lost mid-shuffle ({crasher.crashed_at - started:.1f} s in): {outcome}; "
                  f"{finished - crasher.crashed_at:.1f} s from the loss to the end ({finished - started:.1f} s in all)")


# -- serving ----------------------------------------------------------------------------
def test_service_keeps_answering_when_a_replica_node_dies(cluster, add_worker, served_model,  # noqa: F811
                                                        report_figure):
    from ray import serve

    from ray_mlops.serve import deploy as serving

    head = cluster.head_node.node_id
    worker = add_worker()
    release_head = occupy(head, 0.5)  # room for exactly one 0.5-CPU replica on each node
    occupy(worker.node_id, 0.5)
    config = serve_config_for(served_model, free_port(), app_name="faults", route_prefix="/faults", num_cpus=0.5,
                              min_replicas=2, max_replicas=2, prediction_log=False, health_check_period_s=1,
                              health_check_timeout_s=5)
    url = serving.deploy(config)
    try:
        replicas = wait_for(lambda: len(running_replicas("faults")) == 2 and running_replicas("faults"), timeout=60)
        assert {r["node_id"] for r in replicas} == {head, worker.node_id}
        (victim,) = [r for r in replicas if r["node_id"] == worker.node_id]
        with Load(url, raw_instances(served_model, 20, seed=4), clients=4) as load:
            wait_for(lambda: load.count() >= 20, timeout=60, message="load running")
            release_head()  # room for the replacement, as an autoscaler would add
            lost_at = crash(cluster, worker)
            sent_at_loss = load.count()

            def replaced() -> bool:
                running = running_replicas("faults")
                return len(running) == 2 and victim["replica_id"] not in {r["replica_id"] for r in running}

            wait_for(replaced, timeout=120, interval=0.2, message="a replacement replica")
            recovered_at = time.monotonic()
            wait_for(lambda: load.count() >= sent_at_loss + 40, timeout=60, message="requests after the loss")
        failures = load.failures()
        gap = load.longest_gap_between_successes()
        assert len(failures) <= 4, failures[:3]  # at most the requests in flight on the lost replica
        assert all(status == 200 for status, _ in load.results[-10:])
        assert {r["node_id"] for r in running_replicas("faults")} == {head}
        report_figure(f"serve, replica node lost under load (4 clients): {len(failures)} of {len(load.results)} "
                      f"requests failed; longest wait between successful responses {gap:.2f} s; replacement "
                      f"replica running {recovered_at - lost_at:.1f} s after the loss")
    finally:
        serve.delete("faults")
        serve.shutdown()


# -- the monitor ------------------------------------------------------------------------
def test_monitor_restarts_elsewhere_and_loses_no_window_nor_retrains_twice(cluster, add_worker, monitored,  # noqa: F811
                                                                           tmp_path, report_figure):
    from ray_mlops.monitor.actor import start_monitor, stop_monitor
    from ray_mlops.contracts import PREDICTIONS_DIR, PartitionedWriter

    head = cluster.head_node.node_id
    config, storage, registry = fresh_storage(monitored, tmp_path / "store", window_size=50, checkpoint_interval_s=0.2,
                                              poll_interval_s=0.1, **{"retrain": {"enabled": True}})
    # No data to retrain on: the retraining the alarm launches fails at once, at its ingest stage.
    config = config.model_copy(update={"data": config.data.model_copy(update={"root": str(tmp_path / "none")})})
    release_head = occupy(head, 1)
    worker = add_worker()
    actor = start_monitor(config)
    release_head()
    try:
        status = lambda: ray.get(actor.status.remote(), timeout=60)  # noqa: E731
        assert status().node_id == worker.node_id
        replica_log = PartitionedWriter(storage, PREDICTIONS_DIR, "test-replica")
        rows = monitored.traffic.iloc[:350]
        frames = [records(monitored, rows.iloc[i:i + 25] if i < 150 else shifted(monitored, rows.iloc[i:i + 25]))
                  for i in range(0, 350, 25)]  # 3 calm windows of 50, then 4 drifted ones

        def send(frame):  # what a replica does: the monitor first, then the durable log
            actor.receive.remote(frame)
            replica_log.write(frame)

        for frame in frames[:11]:  # the alarm comes at window 4; window 5 is half full
            send(frame)
        wait_for(lambda: MonitorStore(registry.storage).events("retrain_failed"), timeout=60,
                 message="the retraining the alarm launched")
        lost_at = crash(cluster, worker)
        for frame in frames[11:]:
            send(frame)
        seen: dict = {}

        def accounted():
            seen.update(vars(status()))
            # The crashed worker process can still answer direct actor calls for a moment before
            # it notices its raylet is gone: only the restarted monitor's accounting counts.
            restarted = seen["restarts"] == 1 and seen["node_id"] == head
            return restarted and seen["records"] == 350 and seen["windows"] == 7 and seen["open_window_rows"] == 0 \
                and dict(seen)

        try:
            final = wait_for(accounted, timeout=90, message="the restarted monitor to account for every record")
        except AssertionError:
            raise AssertionError({k: v for k, v in seen.items() if k != "last_verdicts"})
        recovered_at = time.monotonic()
        assert final["restarts"] == 1 and final["node_id"] == head
        assert [v.index for v in final["last_verdicts"]] == list(range(7))
        assert [v.index for v in final["last_verdicts"] if v.alarm] == [4]
        assert [v.drift for v in final["last_verdicts"]] == [False] * 3 + [True] * 4
        history = wait_for(lambda: status().retrain_history, timeout=60, message="the retraining outcome")
        assert len(history) == 1 and history[0].status == "failed" and history[0].stage == "ingest"
        assert len(MonitorStore(registry.storage).events("retrain_started")) == 1
        report_figure(f"monitor, its node lost mid-window: restarted on the head, 350/350 records in 7/7 windows, "
                      f"1 retraining; all accounted {recovered_at - lost_at:.1f} s after the loss")
    finally:
        stop_monitor(config)
