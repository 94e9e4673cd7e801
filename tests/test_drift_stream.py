"""Behaviour on seeded streams: exact alarm indices, cooldown, checkpoint round-trip;
prediction and performance drift."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ray_mlops.monitor.drift import (
    DriftDetector,
    DriftReport,
    DriftStream,
    PerformanceDriftDetector,
    PredictionDriftDetector,
)

pytestmark = pytest.mark.timeout(30)
SHIFT_AT = 15


def _stream_windows(seed: int = 0, n: int = 30) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    rng = np.random.default_rng(seed)
    def frame(rows: int, loc: float) -> pd.DataFrame:
        return pd.DataFrame({"x": rng.normal(loc, 1, rows), "y": rng.normal(0, 1, rows),
                             "c": rng.choice(["a", "b", "c"], rows, p=[0.5, 0.3, 0.2])})
    reference = frame(2000, 0.0)
    return reference, [frame(200, 0.6 if w >= SHIFT_AT else 0.0) for w in range(n)]


def test_seeded_stream_alarms_at_exact_windows() -> None:
    reference, windows = _stream_windows()
    stream = DriftStream(DriftDetector(reference), patience=2, cooldown=3)
    verdicts = [stream.update(w) for w in windows]
    assert [v.index for v in verdicts if v.drift] == list(range(SHIFT_AT, 30))
    assert stream.alarms == [16, 21, 26]
    assert [v.cooling_down for v in verdicts[17:21]] == [True, True, True, False]
    assert verdicts[16].drifted_features == ("x",)
    assert not stream.drift_detected  # window 29 is cooling down


def test_state_round_trips_through_json_and_resumes() -> None:
    reference, windows = _stream_windows()
    detector = DriftDetector(reference)
    full = DriftStream(detector, patience=2, cooldown=3)
    first = DriftStream(detector, patience=2, cooldown=3)
    for w in windows[:17]:
        full.update(w)
        first.update(w)
    resumed = DriftStream.from_state(json.loads(json.dumps(first.to_state())), detector)
    for w in windows[17:]:
        full.update(w)
        resumed.update(w)
    assert resumed.to_state() == full.to_state()
    assert resumed.alarms == [16, 21, 26]


def test_history_is_bounded_and_options_validated() -> None:
    stream = DriftStream(None, patience=1, max_history=5)
    for _ in range(12):
        stream.observe(DriftReport(True, 0.0, {}))
    assert len(stream.history) == 5 and stream.history[-1].index == 11
    with pytest.raises(ValueError, match="patience"):
        DriftStream(None, patience=0)
    with pytest.raises(ValueError, match="detector"):
        stream.update(pd.DataFrame({"x": [1.0]}))


def test_report_round_trips_through_dict() -> None:
    reference, windows = _stream_windows()
    report = DriftDetector(reference).test(windows[20])
    again = DriftReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report


def test_prediction_drift_labels_and_scores() -> None:
    rng = np.random.default_rng(1)
    labels = PredictionDriftDetector(rng.choice([0, 1], 3000, p=[0.7, 0.3]))
    assert labels.detector.kinds_ == {"prediction": "categorical"}
    assert not labels.test(rng.choice([0, 1], 500, p=[0.7, 0.3])).drift
    assert labels.test(rng.choice([0, 1], 500, p=[0.5, 0.5])).drift
    scores = PredictionDriftDetector(rng.beta(2, 5, 3000))
    assert scores.test(rng.beta(2, 5, 500)).features["prediction"].test == "ks"
    assert scores.test(rng.beta(3, 4, 500)).drift


def test_performance_drift_detects_accuracy_drop_only() -> None:
    rng = np.random.default_rng(2)
    def labelled(rows: int, accuracy: float) -> pd.DataFrame:
        y = rng.integers(0, 2, rows)
        correct = rng.random(rows) < accuracy
        return pd.DataFrame({"label": y, "prediction": np.where(correct, y, 1 - y)})
    det = PerformanceDriftDetector(labelled(5000, 0.9))
    assert det.test(labelled(400, 0.8)).drift
    assert not det.test(labelled(400, 0.95)).drift  # better is not drift
    false_alarms = np.mean([det.test(labelled(200, 0.9)).drift for _ in range(300)])
    assert false_alarms <= 0.05 + 0.04
    partial = labelled(100, 0.5).astype({"label": "float"})
    partial.loc[:49, "label"] = np.nan  # labels not back yet are ignored
    assert det.test(partial).features["accuracy"].n_window == 50
    with pytest.raises(ValueError, match="label"):
        det.test(pd.DataFrame({"prediction": [1]}))
    assert PerformanceDriftDetector.from_counts(90, 100).test(labelled(200, 0.5)).drift


@pytest.mark.timeout(120)
def test_thousand_unchanged_windows_raise_at_most_one_confirmed_alarm() -> None:
    """The monitor-level promise at the defaults (MonitorConfig: alpha 0.01 shared by
    three detectors, patience 2, cooldown 3): correlated numeric features with ties and
    a categorical, 1,000 windows of 200 rows against one reference, seeded."""
    from ray_mlops.config import MonitorConfig

    config = MonitorConfig()
    rng = np.random.default_rng(31)
    mix = rng.normal(size=(6, 6))

    def frame(rows: int) -> pd.DataFrame:
        x = rng.normal(size=(rows, 6)) @ mix
        data = {f"x{i}": x[:, i] for i in range(6)}
        data["count"] = rng.poisson(3, rows).astype(float)
        data["c"] = rng.choice(["a", "b", "c", "d"], rows, p=[0.4, 0.3, 0.2, 0.1])
        return pd.DataFrame(data)

    detector = DriftDetector(frame(5000), alpha=config.alpha / 3)
    stream = DriftStream(detector, patience=config.patience, cooldown=config.cooldown,
                         max_history=1000)
    verdicts = [stream.update(frame(config.window_size)) for _ in range(1000)]
    assert len(stream.alarms) <= 1
    assert np.mean([v.drift for v in verdicts]) <= 0.01  # each window: at most alpha / 3 + noise
