"""The monitor's logic on seeded streams, without the actor: windows, verdicts, labels,
false alarms, bad input, checkpoints and retraining bookkeeping across a restart."""

from __future__ import annotations

import numpy as np
import pytest

from monitor_fixtures import RecordingLauncher, feedback, fresh_storage, monitored, records, shifted  # noqa: F401


def _monitor(config, storage, launcher=None, clock=None):
    from ray_mlops.monitor.core import Monitor

    kwargs = {"clock": clock} if clock else {}
    return Monitor(config, storage, launcher=launcher, **kwargs)


def _stream(monitor, frames):
    verdicts = []
    for frame in frames:
        monitor.receive(frame)
        verdicts += monitor.step()
    return verdicts


def _chunks(frame, size):
    return [frame.iloc[i:i + size] for i in range(0, len(frame), size)]


def test_no_drift_stream_raises_no_alarm_and_launches_nothing(monitored, tmp_path):
    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=50, patience=2)
    launcher = RecordingLauncher()
    monitor = _monitor(config, storage, launcher)
    stream = records(monitored, monitored.traffic)
    verdicts = _stream(monitor, _chunks(stream, 37))
    assert len(verdicts) == len(stream) // 50 >= 12
    assert not any(v["alarm"] for v in verdicts)
    assert launcher.launched == []
    assert all(v["detectors"]["predictions"] is not None for v in verdicts)
    assert monitor.status()["open_window_rows"] == len(stream) % 50
    kinds = [e["kind"] for e in registry.events()]
    assert kinds.count("monitor_window") == len(verdicts)


def test_drift_is_flagged_at_once_and_confirmed_after_patience(monitored, tmp_path):
    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=100, patience=2)
    launcher = RecordingLauncher()
    monitor = _monitor(config, storage, launcher)
    calm = records(monitored, monitored.traffic.iloc[:200])
    drift = records(monitored, shifted(monitored, monitored.traffic.iloc[200:500]))
    verdicts = _stream(monitor, _chunks(calm, 100) + _chunks(drift, 100))
    assert [v["drift"] for v in verdicts] == [False, False, True, True, True]
    assert [v["alarm"] for v in verdicts] == [False, False, False, True, False]
    assert "age_years" in verdicts[2]["drifted_features"]
    assert len(launcher.launched) == 1
    job = launcher.launched[0]
    assert job["trigger_window"] == 3 and job["onset"] == verdicts[2]["start"]
    assert monitor.status()["retrain_active"]["id"] == job["id"]
    saved = storage.read_json("monitor/windows/00000003.json")
    assert saved["alarm"] and saved["features"]["age_years"]["p_value"] < 1e-6


def test_feedback_labels_feed_the_accuracy_test(monitored, tmp_path):
    from ray_mlops.monitor.store import FEEDBACK_DIR

    config, storage, _ = fresh_storage(monitored, tmp_path, window_size=100, min_labels=30)
    monitor = _monitor(config, storage)
    frame = records(monitored, monitored.traffic.iloc[:200])
    truth = monitored.traffic[monitored.schema.label].iloc[:200].to_numpy()
    wrong = 1 - frame["prediction"].to_numpy()  # labels that contradict every prediction
    labels = np.concatenate([truth[:100], wrong[100:]])
    storage.write_bytes(f"{FEEDBACK_DIR}/date=2026-01-01/hour=00/t-1.parquet", _parquet(feedback(frame, labels)))
    verdicts = _stream(monitor, [frame])
    assert [v["labeled"] for v in verdicts] == [100, 100]
    assert verdicts[0]["detectors"]["accuracy"] > 0.01 and not verdicts[0]["drift"]
    assert verdicts[1]["accuracy"] == 0.0 and verdicts[1]["detectors"]["accuracy"] < 1e-6
    assert verdicts[1]["drift"] and "accuracy" in verdicts[1]["drifted_features"]


def _parquet(frame):
    from ray_mlops.monitor.store import parquet_bytes

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
    (bad,) = registry.events("monitor_bad_records")
    assert bad["batches"] == 2 and "expected a pandas DataFrame" in bad["first"]
    (window,) = registry.events("monitor_bad_window")
    assert "age_years" in window["error"]
    assert monitor.status()["bad_record_batches"] == 2


def test_restart_resumes_window_and_never_launches_twice(monitored, tmp_path):
    config, storage, _ = fresh_storage(monitored, tmp_path, window_size=100, patience=1)
    launcher = RecordingLauncher()
    first = _monitor(config, storage, launcher)
    drift = records(monitored, shifted(monitored, monitored.traffic.iloc[:160]))
    (alarm,) = _stream(first, [drift])
    assert alarm["alarm"] and len(launcher.launched) == 1
    first.flush_checkpoint()
    # a new process: same storage, a fresh launcher that knows nothing
    relaunched = RecordingLauncher()
    second = _monitor(config, storage, relaunched)
    status = second.status()
    assert status["open_window_rows"] == 60 and status["windows"] == 1 and status["restarts"] == 1
    assert status["retrain_active"]["id"] == launcher.launched[0]["id"]
    second.receive(records(monitored, shifted(monitored, monitored.traffic.iloc[160:260])))
    second.step()
    assert relaunched.launched == [] and relaunched.polls >= 1  # followed, not relaunched
    relaunched.result = {"status": "rejected", "version": "v2",
                         "decision": {"promoted": False, "reason": "worse", "metric": "roc_auc",
                                      "candidate_score": 0.7, "production_score": 0.8}}
    second.step()
    history = second.status()["retrain_history"]
    assert [h["status"] for h in history] == ["rejected"] and history[0]["gate"]["reason"] == "worse"
    assert second.status()["retrain_active"] is None


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
    assert len(launcher.launched) == 1 and launcher.launched[0]["trigger_window"] == 0


def test_catch_up_recovers_records_logged_after_the_last_checkpoint(monitored, tmp_path):
    from ray_mlops.monitor.store import PREDICTIONS_DIR, parquet_bytes

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
    assert status["windows"] == 1 and status["open_window_rows"] == 90 and status["records"] == 190


def test_the_reference_follows_the_production_alias(monitored, tmp_path):
    from serve_fixtures import reference_bytes

    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=100)
    monitor = _monitor(config, storage)
    monitor.step()
    assert monitor.status()["reference"]["version"] == "v1"
    v2 = registry.register(monitored.model, params={}, metrics={"roc_auc": 0.8}, data_fingerprint="x",
                           config_hash="y", profile_files={"reference.parquet": reference_bytes(
                               monitored.traffic, monitored.schema)})
    registry.promote(v2, reason="test")
    monitor.step()
    assert monitor.status()["reference"]["version"] == "v2"
    (event,) = registry.events("monitor_reference")[-1:]
    assert event["version"] == "v2" and event["previous"] == "v1"
