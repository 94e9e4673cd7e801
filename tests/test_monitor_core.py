"""The monitor's logic on seeded streams, without the actor: windows, verdicts, labels,
false alarms, bad input, checkpoints and retraining bookkeeping across a restart."""

# ruff: noqa: F811  (pytest fixtures imported from monitor_fixtures are requested as arguments)
from __future__ import annotations

import numpy as np
import pytest

from monitor_fixtures import (  # noqa: F401
    RecordingLauncher,
    RecordingRollback,
    feedback,
    fresh_storage,
    promote_retrained,
    records,
    stream,
    shifted,
    write_feedback,
)

from ray_mlops.monitor.store import MonitorStore


def _monitor(config, storage, launcher=None, clock=None, **collaborators):
    from ray_mlops.monitor.core import Monitor

    kwargs = {"clock": clock} if clock else {}
    return Monitor(config, storage, launcher=launcher, **kwargs, **collaborators)


def _events(storage, kind=None):
    """The monitor's own event log (verdicts, alarms, probation), not the registry's."""
    from ray_mlops.monitor.store import MonitorStore

    return MonitorStore(storage).events(kind)


def _chunks(frame, size):
    return [frame.iloc[i:i + size] for i in range(0, len(frame), size)]


def test_no_drift_stream_raises_no_alarm_and_launches_nothing(monitored, tmp_path):
    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=50, patience=2)
    launcher = RecordingLauncher()
    monitor = _monitor(config, storage, launcher)
    calm = records(monitored, monitored.traffic)
    verdicts = stream(monitor, _chunks(calm, 37))
    assert len(verdicts) == len(calm) // 50 >= 12
    assert not any(v["alarm"] for v in verdicts)
    assert launcher.launched == []
    assert all(v["detectors"]["predictions"] is not None for v in verdicts)
    assert monitor.status().open_window_rows == len(calm) % 50
    kinds = [e["kind"] for e in _events(storage)]
    assert kinds.count("monitor_window") == len(verdicts)


def test_drift_is_flagged_at_once_and_confirmed_after_patience(monitored, tmp_path):
    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=100, patience=2)
    launcher = RecordingLauncher()
    monitor = _monitor(config, storage, launcher)
    calm = records(monitored, monitored.traffic.iloc[:200])
    drift = records(monitored, shifted(monitored, monitored.traffic.iloc[200:500]))
    verdicts = stream(monitor, _chunks(calm, 100) + _chunks(drift, 100))
    assert [v["drift"] for v in verdicts] == [False, False, True, True, True]
    assert [v["alarm"] for v in verdicts] == [False, False, False, True, False]
    assert "age_years" in verdicts[2]["drifted_features"]
    assert len(launcher.launched) == 1
    job = launcher.launched[0]
    assert job.trigger_window == 3 and job.onset == verdicts[2]["start"]
    assert monitor.status().retrain_active.id == job.id
    saved = storage.read_json("monitor/windows/00000003.json")
    assert saved["alarm"] and saved["features"]["age_years"]["p_value"] < 1e-6


def test_feedback_labels_feed_the_accuracy_test(monitored, tmp_path):
    from ray_mlops.contracts import FEEDBACK_DIR

    config, storage, _ = fresh_storage(monitored, tmp_path, window_size=100, min_labels=30)
    monitor = _monitor(config, storage)
    frame = records(monitored, monitored.traffic.iloc[:200])
    truth = monitored.traffic[monitored.schema.label].iloc[:200].to_numpy()
    wrong = 1 - frame["prediction"].to_numpy()  # labels that contradict every prediction
    labels = np.concatenate([truth[:100], wrong[100:]])
    storage.write_bytes(f"{FEEDBACK_DIR}/date=2026-01-01/hour=00/t-1.parquet", _parquet(feedback(frame, labels)))
    verdicts = stream(monitor, [frame])
    assert [v["labeled"] for v in verdicts] == [100, 100]
    assert verdicts[0]["detectors"]["accuracy"] > 0.01 and not verdicts[0]["drift"]
    assert verdicts[1]["accuracy"] == 0.0 and verdicts[1]["detectors"]["accuracy"] < 1e-6
    assert verdicts[1]["drift"] and "accuracy" in verdicts[1]["drifted_features"]


def _parquet(frame):
    from ray_mlops.contracts import parquet_bytes

    return parquet_bytes(frame)


def test_bad_records_become_events_not_crashes(monitored, tmp_path):
    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=50)
    monitor = _monitor(config, storage)
    good = records(monitored, monitored.traffic.iloc[:50])
    assert monitor.receive("not a frame") == 0
    assert monitor.receive(good.drop(columns=["age_years", "prediction"])) == 0
    mistyped = good.assign(age_years="old")  # a numeric feature arriving as text
    assert monitor.receive(mistyped) == 50
    (skipped,) = monitor.step()
    assert skipped["skipped"] and "age_years" in skipped["error"]
    monitor.receive(records(monitored, monitored.traffic.iloc[:50]))  # fresh request ids
    (verdict,) = monitor.step()
    assert verdict["index"] == 1 and not verdict["drift"]
    (bad,) = MonitorStore(registry.storage).events("monitor_bad_records")
    assert bad["batches"] == 2 and "expected a pandas DataFrame" in bad["first"]
    (window,) = MonitorStore(registry.storage).events("monitor_bad_window")
    assert "age_years" in window["error"]
    assert monitor.status().bad_record_batches == 2


def test_restart_resumes_window_and_never_launches_twice(monitored, tmp_path):
    config, storage, _ = fresh_storage(monitored, tmp_path, window_size=100, patience=1)
    launcher = RecordingLauncher()
    first = _monitor(config, storage, launcher)
    drift = records(monitored, shifted(monitored, monitored.traffic.iloc[:160]))
    (alarm,) = stream(first, [drift])
    assert alarm["alarm"] and len(launcher.launched) == 1
    first.flush_checkpoint()
    # a new process: same storage, a fresh launcher that knows nothing
    relaunched = RecordingLauncher()
    second = _monitor(config, storage, relaunched)
    status = second.status()
    assert status.open_window_rows == 60 and status.windows == 1 and status.restarts == 1
    assert status.retrain_active.id == launcher.launched[0].id
    second.receive(records(monitored, shifted(monitored, monitored.traffic.iloc[160:260])))
    second.step()
    assert relaunched.launched == [] and relaunched.polls >= 1  # followed, not relaunched
    relaunched.result = {"status": "rejected", "version": "v2",
                         "decision": {"promoted": False, "reason": "worse", "metric": "roc_auc",
                                      "candidate_score": 0.7, "production_score": 0.8}}
    second.step()
    history = second.status().retrain_history
    assert [h.status for h in history] == ["rejected"] and history[0].gate.reason == "worse"
    assert second.status().retrain_active is None


def test_write_ahead_job_is_launched_exactly_once_after_a_crash(monitored, tmp_path):
    """A crash between writing the job and launching it: the restart launches it, once."""
    config, storage, _ = fresh_storage(monitored, tmp_path, window_size=100, patience=1)

    class CrashingLauncher(RecordingLauncher):
        def launch(self, job):
            raise KeyboardInterrupt  # the process dies inside launch

    first = _monitor(config, storage, CrashingLauncher())
    first.receive(records(monitored, shifted(monitored, monitored.traffic.iloc[:100])))
    with pytest.raises(KeyboardInterrupt):
        first.step()
    launcher = RecordingLauncher()
    second = _monitor(config, storage, launcher)
    second.step()
    second.step()
    assert len(launcher.launched) == 1 and launcher.launched[0].trigger_window == 0


def test_catch_up_recovers_records_logged_after_the_last_checkpoint(monitored, tmp_path):
    from ray_mlops.contracts import PREDICTIONS_DIR, parquet_bytes

    config, storage, _ = fresh_storage(monitored, tmp_path, window_size=100)
    first = _monitor(config, storage)
    a = records(monitored, monitored.traffic.iloc[:130])
    b = records(monitored, monitored.traffic.iloc[130:190])
    for i, frame in enumerate((a, b)):  # what the replicas write to storage...
        storage.write_bytes(f"{PREDICTIONS_DIR}/date=2026-01-01/hour=00/r-{i}.parquet", parquet_bytes(frame))
    first.receive(a)
    first.step()  # window 0 tested, 30 rows open, checkpointed
    first.receive(b)  # ...and what the monitor had only in memory when it died
    second = _monitor(config, storage)
    status = second.status()
    assert status.windows == 1 and status.open_window_rows == 90 and status.records == 190


def test_a_restart_after_fast_traffic_counts_every_logged_record_once(monitored, tmp_path):
    """More windows than the last few arrive within the catch-up slack: none is re-counted."""
    from ray_mlops.contracts import PREDICTIONS_DIR, PartitionedWriter
    from ray_mlops.monitor.window import RECENT_KEY_WINDOWS

    config, storage, _ = fresh_storage(monitored, tmp_path, window_size=20)
    first, log = _monitor(config, storage), PartitionedWriter(storage, PREDICTIONS_DIR, "replica")
    windows = 3 * RECENT_KEY_WINDOWS
    for frame in _chunks(records(monitored, monitored.traffic.iloc[:20 * windows + 10]), 10):
        log.write(frame)  # the replica's durable log...
        first.receive(frame)  # ...and the monitor, at once
    first.step()
    first.flush_checkpoint()
    second = _monitor(config, storage)  # re-reads everything logged in the slack before the checkpoint
    status = second.status()
    assert (status.records, status.windows, status.open_window_rows) == (20 * windows + 10, windows, 10)


def test_the_reference_follows_the_production_alias(monitored, tmp_path):
    from serve_fixtures import reference_bytes

    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=100)
    monitor = _monitor(config, storage)
    monitor.step()
    assert monitor.status().reference["version"] == "v1"
    v2 = registry.register(monitored.model, params={}, metrics={"roc_auc": 0.8}, data_fingerprint="x",
                           config_hash="y", profile_files={"reference.parquet": reference_bytes(
                               monitored.traffic, monitored.schema)})
    registry.promote(v2, reason="test")
    monitor.step()
    assert monitor.status().reference["version"] == "v2"
    (event,) = MonitorStore(registry.storage).events("monitor_reference")[-1:]
    assert event["version"] == "v2" and event["previous"] == "v1"


# -- probation: a promoted version that does worse in production is rolled back ----------
def _on_probation(monitored, tmp_path, rollback=None, **collaborators):
    """v1 in production, then a retrained v2 promoted over it and seen by the monitor."""
    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=100, min_labels=30,
                                              probation_windows=3, patience=1, cooldown=2)
    rollback = rollback or RecordingRollback(config, storage)
    monitor = _monitor(config, storage, rollback=rollback, **collaborators)
    monitor.step()
    promote_retrained(monitored, storage, registry)
    monitor.step()
    return config, storage, registry, monitor, rollback


def _served(monitored, storage, rows, version, *, correct=True):
    """Records ``version`` served for ``rows``, with true labels or labels contradicting every prediction."""
    frame = records(monitored, rows, version)
    truth = rows[monitored.schema.label].to_numpy()
    write_feedback(storage, frame, truth if correct else 1 - frame["prediction"].to_numpy())
    return frame


def test_a_worse_promoted_version_is_rolled_back_once_and_served_back(monitored, tmp_path):
    launcher, observed = RecordingLauncher(), []
    config, storage, registry, monitor, rollback = _on_probation(
        monitored, tmp_path, launcher=launcher, observe=lambda kind, payload: observed.append((kind, payload)))
    probation = monitor.status().probation
    assert (probation.version, probation.previous, probation.status) == ("v2", "v1", "active")
    assert probation.level == pytest.approx(config.monitor.alpha / 3)
    traffic = monitored.traffic
    verdicts = stream(monitor, [_served(monitored, storage, traffic.iloc[:100], "v2"),
                                 _served(monitored, storage, traffic.iloc[100:200], "v2", correct=False)])
    assert [v["drift"] for v in verdicts] == [False, True] and verdicts[1]["alarm"]  # patience 1: it alarms...
    assert launcher.launched == []  # ...but the rollback takes the place of a retraining
    assert registry.get_alias("production") == "v1" and rollback.swaps == ["v1"] and len(rollback.plans) == 1
    (event,) = registry.events("rollback")
    assert (event["version"], event["previous"], event["window"], event["accuracy"]) == ("v1", "v2", 1, 0.0)
    assert event["automatic"] and event["p_value"] <= event["level"]
    assert event["reference_accuracy"] == pytest.approx(monitored.accuracy, abs=0.01)
    status = monitor.status()
    assert status.probation is None and status.rollback_count == 1
    assert status.rollbacks[0].trigger.probation_window == 2
    assert status.reference["version"] == "v1" and status.cooldown_left == 2
    assert [p["outcome"] for kind, p in observed if kind == "rollback"] == ["rolled_back"]
    assert [e["action"] for e in _events(storage, "monitor_alarm")] == ["none: production rolled back"]
    # the drift is still there: the cooldown holds alarms, then retraining resumes; v1 is not on probation
    later = stream(monitor, [_served(monitored, storage, traffic.iloc[i:i + 100], "v1", correct=False)
                              for i in (200, 300, 400)])
    assert [v["cooling_down"] for v in later] == [True, True, False] and later[2]["alarm"]
    assert len(launcher.launched) == 1 and len(rollback.plans) == 1


def test_a_version_that_is_not_worse_passes_and_an_operator_promotion_has_no_probation(monitored, tmp_path):
    config, storage, registry, monitor, rollback = _on_probation(monitored, tmp_path)
    traffic = monitored.traffic
    verdicts = stream(monitor, [_served(monitored, storage, traffic.iloc[:100], "v2"),
                                 records(monitored, traffic.iloc[100:200], "v2"),  # no labels came back
                                 _served(monitored, storage, traffic.iloc[200:300], "v2")])
    assert [v["labeled"] for v in verdicts] == [100, 0, 100] and not any(v["drift"] for v in verdicts)
    status = monitor.status()
    assert status.probation is None and status.rollback_count == 0 and rollback.plans == []
    (passed,) = [e for e in _events(storage, "monitor_probation") if e["action"] == "passed"]
    assert (passed["version"], passed["windows_seen"], passed["windows_tested"]) == ("v2", 3, 2)
    registry.promote("v1", reason="operator")  # not a retraining's promotion
    monitor.step()
    assert monitor.status().reference["version"] == "v1" and monitor.status().probation is None


def test_a_rollback_cut_short_by_a_crash_is_completed_once_after_restart(monitored, tmp_path):
    def crash(plan):
        raise KeyboardInterrupt  # the process dies as it starts rolling back

    config, storage, registry, first, _ = _on_probation(monitored, tmp_path, rollback=crash)
    first.receive(_served(monitored, storage, monitored.traffic.iloc[:100], "v2", correct=False))
    with pytest.raises(KeyboardInterrupt):
        first.step()
    assert registry.get_alias("production") == "v2"
    rollback = RecordingRollback(config, storage)
    second = _monitor(config, storage, rollback=rollback)
    assert second.status().probation.status == "rolling_back"
    second.step()
    assert rollback.swaps == ["v1"] and registry.get_alias("production") == "v1"
    third = _monitor(config, storage, rollback=rollback)
    third.step()
    assert len(rollback.plans) == 1 and len(registry.events("rollback")) == 1
    assert third.status().rollback_count == 1 and third.status().reference["version"] == "v1"


def test_a_failed_rollback_swap_is_recorded_once_and_production_stays_served(monitored, tmp_path):
    launcher = RecordingLauncher()
    config, storage, registry, monitor, _ = _on_probation(monitored, tmp_path, launcher=launcher)
    rollback = monitor.probation.rollback = RecordingRollback(config, storage, fail_swap=True)
    traffic = monitored.traffic
    stream(monitor, [_served(monitored, storage, traffic.iloc[i:i + 100], "v2", correct=False) for i in (0, 100)])
    assert rollback.swaps == ["v1"] and registry.get_alias("production") == "v2"  # what Serve still runs
    (failed,) = _events(storage, "rollback_failed")
    assert failed["stage"] == "swap" and "cannot load v1" in failed["error"]
    status = monitor.status()
    assert status.rollback_count == 0 and status.rollbacks[0].status == "rollback_failed"
    assert status.reference["version"] == "v2" and status.probation is None
    assert len(launcher.launched) == 1  # still served and worse: drift handling goes on as usual
