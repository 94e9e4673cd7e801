"""The monitor's state is typed records all the way down, and checkpoints written before still load (no Ray)."""

from __future__ import annotations

import json

from ray_mlops.monitor.probation import Probation, ProbationTrigger
from ray_mlops.monitor.retraining import GateSummary, RetrainJob, RetrainOutcome
from ray_mlops.monitor.shadow import ShadowTrial
from ray_mlops.monitor.state import MonitorState, MonitorStatus
from ray_mlops.monitor.tester import VerdictSummary

# A state.json as the monitor wrote it when its entries were dicts (before the records).
OLD_CHECKPOINT = {
    "started": "2026-01-01T00:00:00+00:00", "windows": 2, "skipped_windows": 0, "bad_records": 0, "restarts": 1,
    "reference_version": "v2", "checkpoint_time": 1767225600.0, "records": 250, "dropped_records": 0,
    "stream": {"patience": 2, "cooldown": 0, "max_history": 50, "windows_seen": 2, "streak": 1, "cooldown_left": 0,
               "history": []},
    "verdicts": [{"index": 0, "start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T00:01:00+00:00",
                  "rows": 100, "reference_version": "v1", "served_versions": ["v1"], "drift": False, "alarm": False,
                  "streak": 0, "cooling_down": False, "p_value": 0.4, "detectors": {"inputs": 0.4},
                  "labeled": 0, "accuracy": None, "drifted_features": [], "top_features": {"age_years": 0.4}},
                 {"index": 1, "drift": True, "alarm": True, "p_value": 1e-9, "detectors": {"inputs": 1e-9},
                  "rows": 100}],  # an older verdict without the newer fields
    "retrain": {"active": {"id": "r2", "trigger_window": 1, "onset": "2026-01-01T00:01:00+00:00",
                           "production_version": "v2", "created": "2026-01-01T00:02:00+00:00", "launched": True},
                "history": [{"id": "r1", "status": "promoted", "version": "v2", "trigger_window": 0, "seconds": 9.5,
                             "stage_seconds": {"ingest": 2.0}, "some_future_field": 1,
                             "gate": {"promoted": True, "reason": "better", "metric": "roc_auc",
                                      "candidate_score": 0.9, "production_score": 0.8, "require": "superior",
                                      "compared_with": "v1", "test": {"test": "delong", "p_value": 0.01}}}]},
    "probation": {"active": {"version": "v2", "previous": "v1", "windows": 3, "level": 0.0033, "retrain": "r1",
                             "reference_accuracy": 0.85, "started": None, "seen": 1, "tested": 1, "status": "active",
                             "trigger": None, "outcome": None},
                  "history": [{"version": "v0", "previous": "v-1", "windows": 3, "level": 0.0033, "seen": 2,
                               "tested": 2, "status": "rolled_back", "ended": "2025-12-31T00:00:00+00:00",
                               "trigger": {"window": 7, "p_value": 1e-6, "accuracy": 0.5, "level": 0.0033},
                               "outcome": {"status": "rolled_back"}}],
                  "consecutive_rollbacks": 1},
    # "shadow" is absent: a checkpoint from before shadows
}


def test_a_checkpoint_written_with_dict_entries_loads_as_records():
    state = MonitorState.from_json(json.loads(json.dumps(OLD_CHECKPOINT)))
    first, second = state.verdicts
    assert isinstance(first, VerdictSummary) and first.top_features == {"age_years": 0.4}
    assert second.alarm and second.start is None and second.served_versions == []
    assert state.retrain.active == RetrainJob("r2", 1, onset="2026-01-01T00:01:00+00:00", production_version="v2",
                                              created="2026-01-01T00:02:00+00:00", launched=True)
    (done,) = state.retrain.history
    assert isinstance(done, RetrainOutcome) and isinstance(done.gate, GateSummary)
    assert (done.status, done.version, done.gate.reason, done.gate.test["test"]) == ("promoted", "v2", "better", "delong")
    assert isinstance(state.probation.active, Probation) and state.probation.active.seen == 1
    (rolled,) = state.probation.history
    assert rolled.trigger == ProbationTrigger(window=7, p_value=1e-6, level=0.0033, accuracy=0.5)
    assert state.probation.rollbacks() == [rolled] and state.shadow.active is None and state.shadow.history == []


def test_records_round_trip_through_the_checkpoint_layout():
    state = MonitorState.from_json(OLD_CHECKPOINT)
    trial = ShadowTrial("v3", "v2", retrain="r2", windows=1, labeled=40, test={"test": "mcnemar_exact"})
    state.shadow.active, state.shadow.history = trial, [ShadowTrial("v1", "v0", status="discarded", ended="x")]
    written = json.loads(json.dumps(state.to_json()))
    assert MonitorState.from_json(written) == state
    assert written["verdicts"][0]["top_features"] == {"age_years": 0.4}  # the same flat JSON layout
    assert written["retrain"]["history"][0]["gate"]["reason"] == "better"
    assert written["probation"]["history"][0]["trigger"]["window"] == 7


def test_the_status_holds_records_and_its_json_is_their_dicts():
    state = MonitorState.from_json(OLD_CHECKPOINT)
    status = MonitorStatus.of(state, running=False)
    assert status.last_verdicts[-1].index == 1 and status.alarms == 1
    assert status.retrain_active.id == "r2" and status.retrain_history[0].gate.metric == "roc_auc"
    assert status.probation.version == "v2" and status.rollbacks[0].status == "rolled_back"
    assert status.rollback_count == 1 and status.consecutive_rollbacks == 1
    doc = json.loads(json.dumps(status.to_json()))
    assert doc["last_verdicts"][1]["p_value"] == 1e-9 and doc["retrain_active"]["launched"] is True
    assert doc["retrain_history"][0]["gate"]["compared_with"] == "v1" and doc["probation"]["seen"] == 1
