"""The monitor's shadow part on plain data, without Ray: a candidate in shadow is promoted or
discarded on the online paired test of live labeled rows; labels that never come; restarts."""

# ruff: noqa: F811  (pytest fixtures imported from monitor_fixtures are requested as arguments)
from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from monitor_fixtures import (  # noqa: F401
    RecordingLauncher,
    RecordingRollback,
    VERSION_C,
    _parquet,
    feedback,
    fresh_storage,
    records,
    stream,
    shifted,
    split_extra,
)

from ray_mlops.config import ShadowConfig
from ray_mlops.contracts import FEEDBACK_DIR, PREDICTIONS_DIR, PartitionedWriter
from ray_mlops.monitor.shadow import ShadowTracker, promote_or_discard
from ray_mlops.monitor.store import MonitorStore
from ray_mlops.monitor.tester import now_iso

SHADOW = {"windows": 3, "min_rows": 150, "max_windows": 4, "metric": "accuracy", "require": "superior",
          "alpha": 0.05}


class RecordingSwap:
    """Serve as the shadow action sees it: the production swap and the shadow setter, recorded."""

    def __init__(self):
        self.swaps: list[str] = []
        self.shadows: list[str | None] = []

    def __call__(self, config, version):
        self.swaps.append(version)
        return version

    def set_shadow(self, config, version):
        self.shadows.append(version)
        return version


class RecordingAction:
    """The real promote-or-discard action with a recording swap."""

    def __init__(self, config, storage):
        self.config, self.storage, self.swap, self.plans = config, storage, RecordingSwap(), []

    def __call__(self, plan):
        self.plans.append(plan)
        return promote_or_discard(self.config, self.storage, plan, swap=self.swap)


def _register_candidate(monitored, registry, retrain="r-shadow") -> str:
    """What a retraining registers (lineage to production), not promoted: the shadow."""
    return registry.register(
        monitored.model, params={"family": "logistic_regression", "C": VERSION_C},
        metrics={"roc_auc": 0.8, "accuracy": monitored.accuracy}, data_fingerprint="monitor-tests",
        config_hash="retrained", profile_files={"reference.parquet": _parquet(monitored.reference)},
        parent=registry.get_alias("production"),
        extra={"validation_rows": monitored.validation_rows, "split": split_extra(monitored), "retrain": retrain})


def _shadowed(monitored, storage, rows, candidate, *, right=None, labels=True, seed=0):
    """Records production (v1) answered and ``candidate`` shadowed, logged and labeled as the replicas would.

    The candidate is right on a ``right`` share of rows (None: it answers as production does).
    """
    frame = records(monitored, rows, "v1")
    truth = rows[monitored.schema.label].to_numpy().astype(int)
    if right is None:
        shadow = frame["prediction"].to_numpy()
    else:
        shadow = np.where(np.random.default_rng(seed).random(len(rows)) < right, truth, 1 - truth)
    frame["shadow_version"] = candidate
    frame["shadow_prediction"] = shadow
    frame["shadow_probabilities"] = [[1.0 - p, float(p)] for p in shadow]
    writer = f"replica-{uuid.uuid4().hex[:8]}"
    PartitionedWriter(storage, PREDICTIONS_DIR, writer).write(frame)
    if labels:
        PartitionedWriter(storage, FEEDBACK_DIR, writer).write(feedback(frame, truth))
    return frame


def _in_shadow(monitored, tmp_path, **shadow):
    """v1 in production; a drift alarm; the retraining's candidate v2 went into shadow."""
    from ray_mlops.monitor.core import Monitor

    config, storage, registry = fresh_storage(monitored, tmp_path, window_size=100, min_labels=30, patience=1,
                                              cooldown=0, probation_windows=3, shadow={**SHADOW, **shadow})
    candidate = _register_candidate(monitored, registry)
    launcher = RecordingLauncher()
    launcher.result = {"status": "shadowing", "version": candidate, "production_before": "v1",
                       "shadow_started": now_iso()}
    action = RecordingAction(config, storage)
    monitor = Monitor(config, storage, launcher=launcher, shadow_action=action,
                      rollback=RecordingRollback(config, storage))
    monitor.receive(records(monitored, shifted(monitored, monitored.traffic.iloc[:100]), "v1"))
    (verdict,) = monitor.step()
    assert verdict["alarm"] and len(launcher.launched) == 1
    assert monitor.status().shadow.candidate == candidate
    return config, storage, registry, monitor, action, launcher


def _actions(storage):
    return [e["action"] for e in MonitorStore(storage).events("monitor_shadow")]


def _windows(monitored, storage, candidate, starts, **kwargs):
    traffic = monitored.traffic
    return [_shadowed(monitored, storage, traffic.iloc[i:i + 100], candidate, seed=i, **kwargs) for i in starts]


def test_a_better_candidate_is_promoted_on_live_labels_then_on_probation(monitored, tmp_path):
    config, storage, registry, monitor, action, _ = _in_shadow(monitored, tmp_path)
    verdicts = stream(monitor, _windows(monitored, storage, "v2", (100, 200), right=0.97))
    assert len(verdicts) == 2
    assert registry.get_alias("production") == "v2" and action.swap.swaps == ["v2"]
    (plan,) = action.plans
    test = plan["test"]
    assert plan["decision"] == "promote" and test["test"] == "mcnemar_exact" and test["rows"] == 200
    assert test["passed"] and test["p_value"] < 0.05 and test["estimate"] > 0 and test["low"] > 0
    assert _actions(storage) == ["started", "promoting", "promoted"]
    status = monitor.status()
    assert status.shadow is None and status.shadow_history[-1].status == "promoted"
    assert status.reference["version"] == "v2" and status.probation.version == "v2"  # probation as usual
    (promote,) = registry.events("promote")[-1:]
    assert promote["version"] == "v2" and "online paired gate" in promote["reason"]


def test_a_candidate_no_better_on_live_rows_is_discarded_and_production_stays(monitored, tmp_path):
    config, storage, registry, monitor, action, launcher = _in_shadow(monitored, tmp_path)
    stream(monitor, _windows(monitored, storage, "v2", (100, 200)))  # the same answers as production
    assert registry.get_alias("production") == "v1" and action.swap.swaps == []
    assert action.swap.shadows == [None]  # the shadow is removed from Serve
    (plan,) = action.plans
    assert plan["decision"] == "discard" and not plan["test"]["passed"] and plan["test"]["p_value"] == 1.0
    assert _actions(storage) == ["started", "discarding", "discarded"]
    assert monitor.status().shadow is None
    launcher.result = None  # the drift is still there: the next alarm may retrain again
    monitor.receive(records(monitored, shifted(monitored, monitored.traffic.iloc[300:400]), "v1"))
    (verdict,) = monitor.step()
    assert verdict["alarm"] and len(launcher.launched) == 2


def test_alarms_during_a_shadow_start_no_retraining(monitored, tmp_path):
    config, storage, registry, monitor, action, launcher = _in_shadow(monitored, tmp_path, min_rows=1000)
    drifted = records(monitored, shifted(monitored, monitored.traffic.iloc[100:200]), "v1")
    (verdict,) = stream(monitor, [drifted])
    assert verdict["alarm"] and len(launcher.launched) == 1
    alarms = [e["action"] for e in MonitorStore(storage).events("monitor_alarm")]
    assert alarms == ["retraining", "none: a candidate is in shadow"]


def test_an_alarm_in_the_window_that_promotes_the_candidate_starts_no_retraining(monitored, tmp_path):
    """The window was tested against the production the promotion replaces: its alarm is moot."""
    config, storage, registry, monitor, action, launcher = _in_shadow(monitored, tmp_path, windows=1, min_rows=100)
    drifted = shifted(monitored, monitored.traffic.iloc[100:200])
    (verdict,) = stream(monitor, [_shadowed(monitored, storage, drifted, "v2", right=0.97)])
    assert verdict["alarm"] and registry.get_alias("production") == "v2"
    assert len(launcher.launched) == 1 and monitor.status().retrain_active is None
    alarms = [e["action"] for e in MonitorStore(storage).events("monitor_alarm")]
    assert alarms == ["retraining", "none: production moved to the candidate"]


def test_labels_that_never_come_discard_the_candidate_after_max_windows(monitored, tmp_path):
    config, storage, registry, monitor, action, _ = _in_shadow(monitored, tmp_path)
    stream(monitor, _windows(monitored, storage, "v2", (100, 200, 300), right=0.97, labels=False))
    assert monitor.status().shadow.windows == 3 and action.plans == []  # windows reached, no labels: waits
    stream(monitor, _windows(monitored, storage, "v2", (400,), right=0.97, labels=False))
    (plan,) = action.plans
    assert plan["decision"] == "discard" and plan["test"] is None and "labels did not come" in plan["reason"]
    assert registry.get_alias("production") == "v1" and action.swap.shadows == [None]
    (discarding,) = [e for e in MonitorStore(storage).events("monitor_shadow") if e["action"] == "discarding"]
    assert discarding["windows"] == 4 and discarding["labeled"] == 0


def test_a_restart_mid_shadow_resumes_from_the_checkpoint_and_the_log(monitored, tmp_path):
    from ray_mlops.monitor.core import Monitor

    config, storage, registry, first, action, launcher = _in_shadow(monitored, tmp_path, min_rows=10_000)
    stream(first, _windows(monitored, storage, "v2", (100,), right=0.97))
    assert first.status().shadow.labeled == 100
    second = Monitor(config, storage, launcher=launcher, shadow_action=action)  # the first one is gone
    assert second.status().shadow.windows == 1 and len(second.shadowing.pairs) == 100
    stream(second, _windows(monitored, storage, "v2", (200, 300), right=0.97))
    (plan,) = action.plans
    assert plan["decision"] == "promote" and plan["test"]["rows"] == 300  # both monitors' windows count
    assert registry.get_alias("production") == "v2"


def test_a_promotion_cut_short_by_a_crash_is_completed_once_after_restart(monitored, tmp_path):
    from ray_mlops.monitor.core import Monitor

    def crash(plan):
        raise KeyboardInterrupt  # the process dies as it starts promoting

    config, storage, registry, first, action, launcher = _in_shadow(monitored, tmp_path)
    first.shadowing.action = crash
    for frame in _windows(monitored, storage, "v2", (100, 200), right=0.97):
        first.receive(frame)
    with pytest.raises(KeyboardInterrupt):
        first.step()
    assert registry.get_alias("production") == "v1"
    second = Monitor(config, storage, launcher=launcher, shadow_action=action)
    assert second.status().shadow.status == "promoting"
    second.step()
    assert registry.get_alias("production") == "v2" and action.swap.swaps == ["v2"]
    third = Monitor(config, storage, launcher=launcher, shadow_action=action)
    third.step()
    assert len(action.plans) == 1 and len(registry.events("promote")) == 2  # v1 by the fixture, v2 once


def test_a_failed_promotion_swap_leaves_production_on_the_served_version(monitored, tmp_path):
    config, storage, registry, monitor, action, _ = _in_shadow(monitored, tmp_path)

    def broken(config, version):
        raise RuntimeError(f"replicas cannot load {version}")

    action.swap.__class__ = type("Broken", (RecordingSwap,), {"__call__": lambda self, c, v: broken(c, v)})
    stream(monitor, _windows(monitored, storage, "v2", (100, 200), right=0.97))
    assert registry.get_alias("production") == "v1"
    assert monitor.status().shadow_history[-1].status == "failed"
    assert "cannot load v2" in monitor.status().shadow_history[-1].outcome["error"]


def test_a_significantly_worse_canary_is_withdrawn_at_once(monitored, tmp_path):
    config, storage, registry, monitor, action, _ = _in_shadow(monitored, tmp_path, min_rows=1000)
    (frame,) = _windows(monitored, storage, "v2", (100,), right=0.3)  # the canary answers; it is mostly wrong
    verdicts = stream(monitor, [frame.assign(canary=True)])
    assert len(verdicts) == 1
    (plan,) = action.plans
    assert plan["decision"] == "discard" and plan["test"] is None and plan["reason"].startswith("canary withdrawn")
    assert registry.get_alias("production") == "v1" and action.swap.shadows == [None]


def test_canary_rows_as_good_as_registered_keep_the_trial_going(monitored, tmp_path):
    config, storage, registry, monitor, action, _ = _in_shadow(monitored, tmp_path, min_rows=1000)
    (frame,) = _windows(monitored, storage, "v2", (100,), right=0.97)
    stream(monitor, [frame.assign(canary=[i % 2 == 0 for i in range(len(frame))])])
    assert action.plans == [] and monitor.status().shadow.status == "shadowing"


def _trial(tracker, n, p_production, p_candidate, rng):
    """One simulated shadow trial on ``n`` labeled rows; True when the candidate was promoted."""
    truth = rng.integers(0, 2, n)
    production = np.where(rng.random(n) < p_production, truth, 1 - truth)
    candidate = np.where(rng.random(n) < p_candidate, truth, 1 - truth)
    tracker.start("v2", "v1")
    tracker.labels = lambda keys: pd.Series(truth, index=keys.index)
    tracker.add([pd.DataFrame({"request_id": "r", "row": range(n), "model_version": "v1", "shadow_version": "v2",
                               "prediction": production, "shadow_prediction": candidate})])
    return tracker.observe_window().decision == "promote"


@pytest.mark.parametrize("accuracy", [0.7, 0.9])
def test_a_candidate_no_better_is_promoted_in_at_most_alpha_of_simulated_trials(accuracy):
    tracker = ShadowTracker(None, ShadowConfig(windows=1, min_rows=200, alpha=0.05), task="classification",
                            min_labels=30, labels=lambda keys: keys)
    rng = np.random.default_rng(int(accuracy * 100))
    promoted = np.mean([_trial(tracker, 200, accuracy, accuracy, rng) for _ in range(300)])
    assert promoted <= 0.05
    better = np.mean([_trial(tracker, 200, accuracy - 0.15, accuracy, rng) for _ in range(60)])
    assert better >= 0.8  # power against a candidate 15 points better
