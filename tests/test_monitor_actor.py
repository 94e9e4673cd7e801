"""The monitor as a detached Ray actor: killed mid-stream it restarts and loses nothing;
a failed retraining leaves production untouched and is recorded."""

# ruff: noqa: F811  (pytest fixtures imported from monitor_fixtures are requested as arguments)
from __future__ import annotations

import pytest

from helpers import wait_for
from monitor_fixtures import fresh_storage, promote_retrained, records, write_feedback
from ray_mlops.monitor.store import MonitorStore


@pytest.fixture
def monitor_actor(ray_session, monitored, tmp_path):
    from ray_mlops.monitor.actor import start_monitor, stop_monitor

    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=100, checkpoint_interval_s=0.2,
                                              poll_interval_s=0.1, **{"retrain": {"enabled": False}})
    actor = start_monitor(config)
    yield config, storage, registry, actor
    stop_monitor(config)


def _status(ray, actor):
    return ray.get(actor.status.remote(), timeout=30)


@pytest.mark.slow  # kills and restarts the actor (~15 s)
def test_killed_monitor_restarts_and_resumes_without_losing_records(ray_session, monitored, monitor_actor):
    from ray_mlops.contracts import PREDICTIONS_DIR, PartitionedWriter

    ray = ray_session
    config, storage, registry, actor = monitor_actor
    replica_log = PartitionedWriter(storage, PREDICTIONS_DIR, "test-replica")
    frames = [records(monitored, monitored.traffic.iloc[i:i + 45]) for i in range(0, 450, 45)]

    def send(frame):  # what a replica does: monitor first, then the durable log
        actor.receive.remote(frame)
        replica_log.write(frame)

    for frame in frames[:5]:
        send(frame)
    wait_for(lambda: _status(ray, actor).records == 225, timeout=30, message="the first records")
    ray.kill(actor, no_restart=False)  # mid-stream: a window of 25 rows is open
    for frame in frames[5:]:
        send(frame)
    seen = {}

    def accounted():
        now = _status(ray, actor)
        seen.update(vars(now))
        tested = now.windows * 100 + now.open_window_rows
        return now.records == 450 and tested == 450 and now.windows == 4 and now

    try:
        status = wait_for(accounted, timeout=60, message="the restarted monitor to account for every record")
    except AssertionError:
        raise AssertionError({k: v for k, v in seen.items() if k != "last_verdicts"})
    assert status.restarts == 1
    assert status.windows == 4 and status.open_window_rows == 50
    assert [v.index for v in status.last_verdicts] == [0, 1, 2, 3]
    assert not any(v.drift for v in status.last_verdicts)
    (restart,) = MonitorStore(registry.storage).events("monitor_restarted")
    assert restart["restarts"] == 1


@pytest.mark.slow  # fast lane budget: covered by the full suite
def test_bad_schema_records_to_the_actor_are_an_event(ray_session, monitored, monitor_actor):
    ray = ray_session
    config, storage, registry, actor = monitor_actor
    assert ray.get(actor.receive.remote(records(monitored, monitored.traffic.iloc[:10]).drop(columns=["time"]))) == 0
    wait_for(lambda: MonitorStore(registry.storage).events("monitor_bad_records"), timeout=20, message="the bad-records event")
    assert _status(ray, actor).bad_record_batches == 1
    assert ray.get(actor.ping.remote()) == "ok"


@pytest.mark.slow  # its own Serve app and monitor (~11 s)
def test_a_worse_promoted_version_is_rolled_back_and_served_back_by_the_actor(ray_session, monitored, tmp_path):
    """Probation on the real actor: the injected swap is called with the previous version."""
    from ray_mlops.monitor.actor import start_monitor, stop_monitor

    ray = ray_session
    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=100, poll_interval_s=0.1,
                                              checkpoint_interval_s=0.2, probation_windows=3, min_labels=30,
                                              **{"retrain": {"enabled": False}})
    swaps = tmp_path / "swaps.txt"

    def swap(cfg, version):  # runs in the monitor actor: leaves its trace on disk
        with open(swaps, "a") as out:
            out.write(f"{version}\n")
        return version

    actor = start_monitor(config, swap=swap)
    try:
        wait_for(lambda: (_status(ray, actor).reference or {}).get("version") == "v1", timeout=30,
                 message="the monitor to follow v1")
        promote_retrained(monitored, storage, registry)
        wait_for(lambda: getattr(_status(ray, actor).probation, "version", None) == "v2", timeout=30,
                 message="v2 on probation")
        frame = records(monitored, monitored.traffic.iloc[:100], "v2")
        write_feedback(storage, frame, 1 - frame["prediction"].to_numpy())  # v2 is wrong on every row
        actor.receive.remote(frame)
        status = wait_for(lambda: (s := _status(ray, actor)).rollback_count == 1 and s, timeout=30,
                          message="the rollback")
    finally:
        stop_monitor(config)
    assert registry.get_alias("production") == "v1" and swaps.read_text().split() == ["v1"]
    assert status.rollbacks[0].outcome == {"status": "rolled_back", "version": "v2", "target": "v1",
                                                 "served": "v1"}
    (event,) = registry.events("rollback")
    assert (event["version"], event["previous"], event["automatic"], event["accuracy"]) == ("v1", "v2", True, 0.0)


def test_failed_retraining_leaves_production_untouched(monitored, tmp_path):
    """Sources gone at retraining time: the ingest stage fails, production stays v1."""
    from ray_mlops.monitor.retrain import retrain

    config, storage, registry = fresh_storage(monitored, tmp_path)
    config = config.model_copy(update={"data": config.data.model_copy(update={"root": str(tmp_path / "gone")})})
    swaps = []
    outcome = retrain(config, storage, {"id": "r1", "onset": None},
                      swap=lambda cfg, version: swaps.append(version))
    assert outcome["status"] == "failed" and outcome["stage"] == "ingest"
    assert "not found" in outcome["error"]
    assert list(outcome["stage_seconds"]) == ["ingest"]
    assert registry.get_alias("production") == "v1" and outcome["production_after"] == "v1"
    assert swaps == [] and [v["version"] for v in registry.versions()] == ["v1"]
    (event,) = MonitorStore(registry.storage).events("retrain_failed")
    assert event["retrain"] == "r1" and event["stage"] == "ingest"


@pytest.mark.slow  # a real re-ingest before the failure (~9 s)
def test_failing_trainer_is_recorded_and_production_untouched(ray_session, sample_ingest, monitored, tmp_path):
    """An injected trainer that fails after a real re-ingest: recorded at the search stage."""
    from ray_mlops.monitor.retrain import retrain

    config, storage, registry = fresh_storage(monitored, tmp_path)
    config = config.model_copy(update={"data": sample_ingest[0].data})

    def failing_search(*args, **kwargs):
        raise RuntimeError("trainer exploded")

    outcome = retrain(config, storage, {"id": "r2", "onset": None}, search=failing_search)
    assert outcome["status"] == "failed" and outcome["stage"] == "search"
    assert "trainer exploded" in outcome["error"]
    assert list(outcome["stage_seconds"]) == ["ingest", "read", "prediction log", "search"]  # timed up to the failure
    assert registry.get_alias("production") == "v1" and len(registry.versions()) == 1
    assert MonitorStore(registry.storage).events("retrain_failed")[0]["stage"] == "search"


def test_shutdown_stops_the_monitor_through_its_last_checkpoint(ray_session, monitored, tmp_path):
    """`ray-mlops shutdown` (loop.shutdown) stops the monitor by stop_monitor: the open window is saved."""
    from ray_mlops import loop
    from ray_mlops.monitor.actor import get_monitor, start_monitor

    ray = ray_session
    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=100, checkpoint_interval_s=3600,
                                              poll_interval_s=0.1, **{"retrain": {"enabled": False}})
    actor = start_monitor(config)
    frame = records(monitored, monitored.traffic.iloc[:30])
    assert ray.get(actor.receive.remote(frame), timeout=30) == 30
    wait_for(lambda: _status(ray, actor).records == 30, timeout=30, message="the records merged")
    assert len(MonitorStore(storage).load_window()) == 0  # no periodic checkpoint for an hour
    done = loop.shutdown(config)
    assert done == {"app_removed": False, "monitor_stopped": True} and get_monitor(config) is None
    saved = MonitorStore(storage).load_window()
    assert sorted(saved["request_id"] + ":" + saved["row"].astype(str)) == sorted(
        frame["request_id"] + ":" + frame["row"].astype(str))
    assert MonitorStore(storage).load_state()["records"] == 30
