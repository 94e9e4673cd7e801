"""The demo's live figures (pure): Wilson intervals against scipy, phases, the paired
comparison against scipy's binomtest, the series and its chart, the summary.json shape."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from ray_mlops.demo import closed_trial, live_figures, shadow_comparison
from ray_mlops.live_accuracy import accuracy, paired, select, series, wilson
from ray_mlops.monitor.report import accuracy_chart, render_report
from ray_mlops.traffic import Answer


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (140, 200), (799, 800), (800, 800)])
def test_wilson_equals_scipy(k, n):
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    figure = wilson(k, n)
    assert (figure.estimate, figure.rows) == (k / n, n)
    assert (figure.low, figure.high) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_no_rows_gives_no_figures():
    assert wilson(0, 0).to_json() == {"estimate": None, "low": None, "high": None, "rows": 0}
    assert paired([], []).to_json() == {"rows": 0, "production_accuracy": None, "candidate_accuracy": None,
                                        "p_value": None}


def _answers(version, correct, *, pass_index=0, start=0.0, first=0):
    return [Answer(start + i * 0.01, pass_index, first + i, version, bool(c)) for i, c in enumerate(correct)]


def test_paired_comparison_is_exact_mcnemar_on_the_same_records():
    rng = np.random.default_rng(0)
    old = rng.random(300) < 0.62
    new = np.where(rng.random(300) < 0.3, ~old, old) | (rng.random(300) < 0.2)
    production, candidate = _answers("v1", old), _answers("v2", new)[::-1]  # order does not matter
    result = paired(production + _answers("v1", ~old, first=0), candidate)  # a record's first answer counts
    wins, losses = int(np.sum(new & ~old)), int(np.sum(old & ~new))
    assert result.rows == 300
    assert (result.production_accuracy, result.candidate_accuracy) == (old.mean(), new.mean())
    assert result.p_value == pytest.approx(stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)


def test_live_figures_measure_each_phase_on_its_own_answers():
    calm = _answers("v1", [1, 1, 1, 0] * 50)
    storm = (_answers("v1", [1, 0] * 100, start=10) + _answers("v1", [0] * 50, pass_index=1, start=20)
             + _answers("v2", [1] * 20, pass_index=1, start=30))
    recovered = _answers("v2", [1, 1, 0, 1, 1] * 40, start=40) + _answers("v2", [0] * 10, pass_index=1, start=50)
    figures = live_figures(calm, storm, recovered, "v1", "v2")
    assert figures.before_drift.estimate == 0.75 and figures.before_drift.rows == 200
    assert figures.after_drift.estimate == 0.5 and figures.after_drift.rows == 200  # v1's first pass only
    assert figures.after_promotion.estimate == 0.8 and figures.after_promotion.rows == 200
    assert figures.shadow.rows == 200 and figures.shadow.candidate_accuracy == 0.8
    doc = json.loads(json.dumps(figures.to_json()))
    assert set(doc) == {"live_accuracy", "shadow"}
    assert set(doc["live_accuracy"]) == {"before_drift", "after_drift", "after_promotion"}
    assert all(set(v) == {"estimate", "low", "high", "rows"} for v in doc["live_accuracy"].values())
    assert set(doc["shadow"]) == {"rows", "production_accuracy", "candidate_accuracy", "p_value"}
    unpromoted = live_figures(calm, storm, [], "v1", None)
    assert unpromoted.after_promotion.rows == 0 and unpromoted.shadow.rows == 0


def test_a_recorded_shadow_stage_comparison_is_used_as_is():
    recorded = {"rows": 412, "production_accuracy": 0.61, "candidate_accuracy": 0.7, "p_value": 1e-4}
    comparison, source = shadow_comparison(recorded, [], [])
    assert comparison.to_json() == recorded and source == "online shadow stage"
    _, fallback = shadow_comparison({"rows": None}, [], [])
    assert fallback.startswith("same drifted records")
    test = {"metric": "accuracy", "test": "mcnemar_exact", "rows": 300, "production_score": 0.6,
            "candidate_score": 0.7, "p_value": 0.001}
    trial = {"candidate": "v2", "status": "promoted", "test": test}
    comparison, source = shadow_comparison(trial, [], [])
    assert comparison.to_json() == {"rows": 300, "production_accuracy": 0.6, "candidate_accuracy": 0.7,
                                    "p_value": 0.001} and "mcnemar_exact" in source


def test_the_shadow_trial_of_the_candidate_is_found_once_it_closed():
    from ray_mlops.monitor.state import MonitorStatus

    from ray_mlops.monitor.shadow import ShadowTrial

    status = MonitorStatus(running=True)
    status.shadow_history = [ShadowTrial("v2", "v1", status="shadowing")]  # the shadow stage's field
    assert closed_trial(status, "v2") is None and closed_trial(MonitorStatus(running=True), "v2") is None
    status.shadow_history = [ShadowTrial("v2", "v1", status="discarded"), ShadowTrial("v3", "v1", status="promoted")]
    assert closed_trial(status, "v2").status == "discarded" and closed_trial(status, "v3").status == "promoted"


def test_series_buckets_by_version_and_the_report_plots_it():
    answers = _answers("v1", [1, 0, 1, 1] * 30) + _answers("v2", [1] * 50, start=5)
    points = series(answers, bucket_rows=50, since=answers[0].time)
    assert [(p["version"], p["rows"]) for p in points] == [("v1", 50), ("v1", 50), ("v1", 20), ("v2", 50)]
    assert points[0]["accuracy"] == accuracy(select(answers, version="v1")[:50]).estimate
    assert points[-1]["low"] < 1.0 == points[-1]["high"]
    chart = accuracy_chart(points)
    assert chart.startswith("<svg") and chart.count("<circle") == 4 and "v2" in chart
    page = render_report([], [], {"title": "t"}, live=points)
    assert "Live accuracy over time" in page and "Live accuracy" not in render_report([], [], {"title": "t"})
