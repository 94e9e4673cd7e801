"""Probation without Ray: the false-rollback rate is calibrated, a worse version is rolled back,
and the rollback action keeps the registry consistent with what Serve runs."""

from __future__ import annotations

import doctest
from dataclasses import replace

import numpy as np
import pytest

from ray_mlops.monitor import probation as probation_module
from ray_mlops.monitor.drift import PerformanceDriftDetector
from ray_mlops.monitor.probation import Probation, roll_back
from ray_mlops.monitor.store import MonitorStore
from ray_mlops.monitor.tester import VerdictSummary

K = 5            # probation windows
REF_ROWS = 400   # labelled rows the promoted accuracy was measured on
LABELS = 100     # labelled rows per window
LABELLED = 0.8   # share of windows with enough labels for the test


def simulate(p_reference: float, p_live: float, periods: int, *, alpha: float, seed: int) -> np.ndarray:
    """Run ``periods`` probations; True where the version was rolled back.

    Each period is one promotion: the version's reference accuracy is measured on
    ``REF_ROWS`` rows at its true accuracy ``p_reference``, then up to ``K`` windows of
    ``LABELS`` labels arrive at ``p_live`` (some windows without labels, as in production).
    The p-values are the monitor's accuracy test; the decision is :class:`Probation`'s.
    """
    rng = np.random.default_rng(seed)
    ref_correct = rng.binomial(REF_ROWS, p_reference, size=periods)
    live_correct = rng.binomial(LABELS, p_live, size=(periods, K))
    labelled = rng.random((periods, K)) < LABELLED
    detectors: dict[int, PerformanceDriftDetector] = {}
    p_values: dict[tuple[int, int], float] = {}  # the exact test depends on the counts only

    def p_value(ref: int, live: int) -> float:
        if (ref, live) not in p_values:
            detector = detectors.setdefault(ref, PerformanceDriftDetector.from_counts(ref, REF_ROWS))
            p_values[ref, live] = detector.test_counts(live, LABELS).p_value
        return p_values[ref, live]

    rolled = np.zeros(periods, dtype=bool)
    for i in range(periods):
        trial = Probation("v2", "v1", windows=K, level=alpha / K)
        for k in range(K):
            p = p_value(int(ref_correct[i]), int(live_correct[i, k])) if labelled[i, k] else None
            trial = trial.observe(VerdictSummary(k, served_versions=["v2"], detectors={"accuracy": p}))
            if trial.status != "active":
                break
        rolled[i] = trial.status == "rolling_back"
        assert trial.status in ("rolling_back", "passed") and trial.seen <= K
    return rolled


@pytest.mark.parametrize("accuracy", [0.7, 0.85, 0.95])
def test_false_rollback_rate_of_a_version_that_is_not_worse_stays_below_alpha(accuracy):
    alpha = 0.05  # the bound holds for any alpha; 0.05 gives enough events to see it
    rolled = simulate(accuracy, accuracy, 1500, alpha=alpha, seed=int(accuracy * 100))
    assert rolled.mean() <= alpha
    assert rolled.mean() > 0.005  # calibrated, not vacuous: rollbacks do happen at the edge


def test_without_the_correction_false_rollbacks_would_exceed_alpha():
    """Why Bonferroni over the probation windows: alpha per window over K windows is ~K times too lax."""
    alpha = 0.05
    naive = simulate(0.85, 0.85, 1000, alpha=alpha * K, seed=85)  # level alpha in each window
    assert naive.mean() > 2 * alpha


@pytest.mark.parametrize("live, power", [(0.7, 0.85), (0.6, 0.99)])
def test_a_clearly_worse_version_is_rolled_back(live, power):
    rolled = simulate(0.85, live, 400, alpha=0.01, seed=7)  # the default monitor.alpha
    assert rolled.mean() >= power


def test_probation_doctest():
    assert doctest.testmod(probation_module).failed == 0


def test_windows_of_older_records_do_not_use_up_probation():
    trial = Probation("v2", "v1", windows=2, level=0.01)
    old = VerdictSummary(0, served_versions=["v1"], detectors={"accuracy": 1e-9})
    trial = trial.observe(old)
    assert trial.status == "active" and trial.seen == 0
    unlabelled = VerdictSummary(1, served_versions=["v1", "v2"], detectors={"accuracy": None})
    trial = trial.observe(unlabelled)
    assert trial.status == "active" and (trial.seen, trial.tested) == (1, 0)
    trial = trial.observe(replace(unlabelled, index=2))
    assert trial.status == "passed"
    trial = trial.observe(replace(old, served_versions=["v2"]))
    assert trial.status == "passed"  # over: never rolls back later
    assert Probation.from_dict(trial.to_dict()) == trial


# -- the rollback action on a real registry (local storage, no Ray) ------------------------
@pytest.fixture
def promoted(tmp_path):
    """v1 then v2 promoted; returns (config, storage, registry)."""
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import make_pipeline

    from ray_mlops.config import load_config
    from ray_mlops.registry import Registry
    from ray_mlops.storage import Storage

    config = load_config(None).model_copy(update={"storage": str(tmp_path)})
    storage = Storage(config.storage)
    registry = Registry(storage, config.model_name)
    model = make_pipeline(DummyClassifier()).fit([[0], [1]], [0, 1])
    for n in (1, 2):
        registry.register(model, params={}, metrics={}, data_fingerprint="f", config_hash="c")
        registry.promote(f"v{n}", reason="test")
    return config, storage, registry


PLAN = {"version": "v2", "previous": "v1", "retrain": "r1",
        "evidence": {"window": 7, "p_value": 1e-6, "accuracy": 0.5, "reference_accuracy": 0.85, "level": 0.002}}


def test_roll_back_points_production_back_and_swaps_once_even_when_run_again(promoted):
    config, storage, registry = promoted
    swaps = []
    outcome = roll_back(config, storage, PLAN, swap=lambda cfg, version: swaps.append(version) or version)
    assert outcome == {"status": "rolled_back", "version": "v2", "target": "v1", "served": "v1"}
    assert registry.get_alias("production") == "v1" and registry.alias_history("production") == ["v1"]
    (event,) = registry.events("rollback")
    assert (event["version"], event["previous"], event["window"], event["p_value"]) == ("v1", "v2", 7, 1e-6)
    assert event["automatic"] and event["accuracy"] == 0.5 and event["reference_accuracy"] == 0.85
    again = roll_back(config, storage, PLAN, swap=lambda cfg, version: swaps.append(version))  # after a restart
    assert again["status"] == "rolled_back" and swaps == ["v1", "v1"]
    assert len(registry.events("rollback")) == 1 and registry.get_alias("production") == "v1"


def test_a_failed_swap_leaves_production_on_the_served_version(promoted):
    config, storage, registry = promoted

    def broken(cfg, version):
        raise RuntimeError("replicas cannot load v1")

    outcome = roll_back(config, storage, PLAN, swap=broken)
    assert outcome["status"] == "failed" and outcome["stage"] == "swap" and "cannot load" in outcome["error"]
    assert registry.get_alias("production") == "v2"  # what Serve still runs
    assert registry.alias_history("production") == ["v1", "v2"]
    (failed,) = MonitorStore(registry.storage).events("rollback_failed")
    assert failed["target"] == "v1" and failed["window"] == 7
    assert [e["kind"] for e in registry.events() if e["kind"] in ("rollback", "promote")][-2:] == ["rollback", "promote"]


def test_roll_back_does_nothing_when_production_moved_on(promoted):
    config, storage, registry = promoted
    registry.promote("v1", reason="operator")  # history v1, v2, v1: production is already elsewhere
    registry.register(registry.load("v1"), params={}, metrics={}, data_fingerprint="f", config_hash="c")
    registry.promote("v3", reason="operator")
    swaps = []
    outcome = roll_back(config, storage, PLAN, swap=lambda cfg, version: swaps.append(version))
    assert outcome["status"] == "skipped" and swaps == [] and registry.get_alias("production") == "v3"


def test_status_shows_probation_and_rollbacks_from_the_checkpoint(promoted, capsys):
    """`ray-mlops status` with the monitor down reads probation and rollbacks from its checkpoint."""
    from ray_mlops import loop
    from ray_mlops.cli import _print_status
    from ray_mlops.monitor.store import MonitorStore

    config, storage, registry = promoted
    rolled = {**Probation("v2", "v1", windows=K, level=0.01 / K).to_dict(), "status": "rolled_back",
              "trigger": PLAN["evidence"], "outcome": {"status": "rolled_back"}}
    active = Probation("v3", "v2", windows=K, level=0.01 / K, seen=1, tested=1).to_dict()
    MonitorStore(storage).save_state({"windows": 9, "records": 900, "verdicts": [], "reference_version": "v3",
                                      "retrain": {"active": None, "history": []},
                                      "probation": {"active": active, "history": [rolled], "consecutive_rollbacks": 1}})
    report = loop.status(config, with_ray=False)
    assert report.monitor.probation.version == "v3" and report.monitor.rollback_count == 1
    _print_status(report)
    out = capsys.readouterr().out
    assert "probation:  v3 (rolls back to v2) active; windows 1/5, 1 with labels, rollback at p <= 0.002" in out
    assert "rollbacks:  1 automatic (1 in a row)" in out
    assert "rolled_back     v2 -> v1 at window 7: accuracy 0.5 vs 0.85 p=1e-06" in out
