"""The promotion gate: both outcomes, the baseline rule, smoke tests, regression, bad input.

Every comparison is a paired test on the same rows (statistics: tests/test_gate_stats.py);
here: which test runs, what the decision records, and that it follows the test.

Runs on a local folder and on the loopback S3 server (the ``storage`` fixture).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from registry_fixtures import (  # noqa: F401
    CATEGORICAL,
    REGISTER_ARGS,
    REGRESSION_SCHEMA,
    SCHEMA,
    fit_pipeline,
    fit_regressor,
    fit_weak,
    make_table,
    preprocessor,
    storage,
)
from ray_mlops.config import GateConfig, load_config
from ray_mlops.data.schema import FeatureSchema
from ray_mlops.errors import ConfigError, DataError, VersionNotFoundError
from ray_mlops.promotion import GateDecision, gate_and_promote, gate_metric
from ray_mlops.registry import Registry

TRAIN = make_table(600, seed=1)
HOLDOUT = make_table(300, seed=2)
GATE = GateConfig()


@pytest.fixture(scope="module")
def models():
    worded = TRAIN.assign(failed=TRAIN["failed"].map({0: "no", 1: "yes"}))
    return {
        "weak": fit_weak(TRAIN),
        "good": fit_pipeline(TRAIN, "logreg"),
        "hgb": fit_pipeline(TRAIN, "hgb"),
        "shuffled": fit_pipeline(TRAIN, "forest", shuffle_labels=True),
        "string_classes": fit_pipeline(worded, "logreg"),
        "regressor": fit_regressor(TRAIN),
        "shuffled_regressor": fit_regressor(TRAIN, shuffle_labels=True),
    }


def register(registry: Registry, model) -> str:
    return registry.register(model, **REGISTER_ARGS)


def test_first_model_promotes_when_it_beats_the_baseline(storage, models):
    registry = Registry(storage, "failures")
    version = register(registry, models["good"])
    decision = gate_and_promote(registry, version, HOLDOUT, SCHEMA, GATE)
    assert isinstance(decision, GateDecision)
    assert decision.promoted and decision.smoke_test.passed
    assert decision.metric == "roc_auc" and decision.baseline_score == pytest.approx(0.5)
    assert decision.candidate_score > 0.8 and decision.production_score is None
    assert "beats the baseline significantly" in decision.reason and "delong" in decision.reason
    test = decision.test
    assert (test.test, test.require, test.rows, decision.compared_with) == ("delong", "superior", 300, "baseline")
    assert test.p_value < GATE.alpha and test.low > 0 and test.estimate == pytest.approx(decision.candidate_score - 0.5)
    assert registry.aliases() == {"production": "v1", "candidate": "v1"}
    gate_events = registry.events(kind="gate")
    assert len(gate_events) == 1 and gate_events[0]["promoted"] is True
    assert gate_events[0]["candidate_score"] == pytest.approx(decision.candidate_score)
    assert gate_events[0]["baseline_score"] == pytest.approx(0.5)
    assert gate_events[0]["test"] == test.to_json() and gate_events[0]["test"]["rows"] == 300
    assert [e["kind"] for e in registry.events()] == ["register", "alias", "gate", "promote"]
    assert registry.events(kind="promote")[0]["scores"]["candidate"] == pytest.approx(decision.candidate_score)


def test_first_model_that_does_not_beat_the_baseline_stays_out(storage, models):
    registry = Registry(storage, "failures")
    version = register(registry, models["shuffled"])
    decision = gate_and_promote(registry, version, HOLDOUT, SCHEMA, GATE)
    assert not decision.promoted and decision.smoke_test.passed
    assert "does not beat the baseline significantly" in decision.reason
    assert decision.test.p_value >= GATE.alpha and decision.test.low <= 0
    assert registry.get_alias("production") is None and registry.get_alias("candidate") == version
    assert registry.events(kind="promote") == []


def test_good_candidate_replaces_production_and_worse_one_does_not(storage, models):
    registry = Registry(storage, "failures")
    assert gate_and_promote(registry, register(registry, models["weak"]), HOLDOUT, SCHEMA, GATE).promoted
    better = gate_and_promote(registry, register(registry, models["good"]), HOLDOUT, SCHEMA, GATE)
    assert better.promoted, better.reason
    assert "is non-inferior to production v1" in better.reason
    assert better.production_version == "v1" and better.production_score is not None
    assert better.test.require == "non_inferior" and better.compared_with == "production"
    assert better.test.low > -GATE.margin and better.test.p_value < GATE.alpha
    assert registry.get_alias("production") == "v2"

    worse = gate_and_promote(registry, register(registry, models["shuffled"]), HOLDOUT, SCHEMA, GATE)
    assert not worse.promoted and "is not shown non-inferior to production v2" in worse.reason
    assert worse.candidate_score < worse.production_score - GATE.margin
    assert worse.test.high < 0 and worse.test.p_value > 0.5  # significantly worse, not merely unproven
    assert registry.get_alias("production") == "v2" and registry.get_alias("candidate") == "v3"
    last_gate = registry.events(kind="gate")[-1]
    assert (last_gate["candidate_version"], last_gate["production_version"], last_gate["promoted"]) == ("v3", "v2", False)
    assert last_gate["production_score"] == pytest.approx(worse.production_score)
    assert last_gate["test"]["p_value"] == pytest.approx(worse.test.p_value)
    assert registry.alias_history("production") == ["v1", "v2"]
    assert registry.rollback() == "v1"


def test_an_equal_model_is_non_inferior_but_not_superior(tmp_path, models):
    registry = Registry(str(tmp_path), "failures")
    gate_and_promote(registry, register(registry, models["good"]), HOLDOUT, SCHEMA, GATE)
    again = gate_and_promote(registry, register(registry, models["good"]), HOLDOUT, SCHEMA, GATE)
    assert again.promoted and again.candidate_score == pytest.approx(again.production_score)
    assert again.test.estimate == 0.0
    already = gate_and_promote(registry, "v2", HOLDOUT, SCHEMA, GATE)
    assert not already.promoted and "already production" in already.reason and already.test is None
    superior = GateConfig(require="superior")
    same = gate_and_promote(registry, register(registry, models["good"]), HOLDOUT, SCHEMA, superior)
    assert not same.promoted and "is not shown superior to production v2" in same.reason
    assert same.test.p_value == 1.0 and registry.get_alias("production") == "v2"
    accuracy = gate_and_promote(registry, register(registry, models["good"]), HOLDOUT, SCHEMA,
                                GateConfig(metric="accuracy", require="superior"))
    assert not accuracy.promoted and accuracy.test.test == "mcnemar_exact"


def test_a_clearly_better_model_passes_a_superior_gate(tmp_path, models):
    registry = Registry(str(tmp_path), "failures")
    gate = GateConfig(metric="accuracy", require="superior")
    assert gate_and_promote(registry, register(registry, models["weak"]), HOLDOUT, SCHEMA, gate).promoted
    better = gate_and_promote(registry, register(registry, models["good"]), HOLDOUT, SCHEMA, gate)
    assert better.test.test == "mcnemar_exact" and better.test.rows == len(HOLDOUT)
    assert better.promoted == (better.test.p_value < gate.alpha) and better.promoted, better.reason


@pytest.mark.parametrize("broken", ["string_classes", "regressor", "other_schema"])
def test_smoke_test_failure_blocks_promotion(tmp_path, models, broken):
    registry = Registry(str(tmp_path), "failures")
    gate_and_promote(registry, register(registry, models["good"]), HOLDOUT, SCHEMA, GATE)
    # classes that are not the holdout's labels, a regressor (no predict_proba), a model fitted on a column the holdout lacks
    model = _fit_on_renamed(TRAIN) if broken == "other_schema" else models[broken]
    decision = gate_and_promote(registry, register(registry, model), HOLDOUT, SCHEMA, GATE)
    assert not decision.promoted and not decision.smoke_test.passed
    assert decision.reason.startswith("smoke test failed")
    assert decision.candidate_score is None
    assert registry.get_alias("production") == "v1"
    assert registry.events(kind="gate")[-1]["smoke_test"]["passed"] is False


def _fit_on_renamed(frame):
    renamed = frame.rename(columns={"temp": "temperature"})
    numeric = ["temperature", "vibration", "age"]
    pipeline = Pipeline([("pre", preprocessor(numeric=numeric)), ("est", LogisticRegression())])
    return pipeline.fit(renamed[numeric + CATEGORICAL], renamed["failed"])


def test_tampered_candidate_fails_the_smoke_test(storage, models):
    registry = Registry(storage, "failures")
    version = register(registry, models["good"])
    rel = f"registry/failures/{version}/model.skops"
    data = bytearray(storage.read_bytes(rel))
    data[100] ^= 0xFF
    storage.write_bytes(rel, bytes(data))
    decision = gate_and_promote(registry, version, HOLDOUT, SCHEMA, GATE)
    assert not decision.promoted and "sha256" in decision.smoke_test.detail
    assert registry.get_alias("production") is None


def test_unloadable_production_falls_back_to_the_baseline(tmp_path, models):
    registry = Registry(str(tmp_path), "failures")
    gate_and_promote(registry, register(registry, models["good"]), HOLDOUT, SCHEMA, GATE)
    path = tmp_path / "registry/failures/v1/model.skops"
    path.write_bytes(path.read_bytes()[:-10])
    decision = gate_and_promote(registry, register(registry, models["hgb"]), HOLDOUT, SCHEMA, GATE)
    assert decision.promoted and "production v1 cannot be loaded" in decision.reason
    assert decision.production_score is None and "beats the baseline significantly" in decision.reason
    assert decision.compared_with == "baseline" and decision.test.require == "superior"


def test_regression_is_judged_on_rmse(storage, models):
    registry = Registry(storage, "hours")
    assert gate_metric(REGRESSION_SCHEMA, GATE) == ("rmse", "min")
    good = gate_and_promote(registry, register(registry, models["regressor"]), HOLDOUT, REGRESSION_SCHEMA, GATE)
    assert good.promoted and good.metric == "rmse" and good.candidate_score < good.baseline_score
    assert good.test.test == "paired_bootstrap" and good.test.estimate == pytest.approx(
        good.baseline_score - good.candidate_score)
    bad = gate_and_promote(registry, register(registry, models["shuffled_regressor"]), HOLDOUT,
                           REGRESSION_SCHEMA, GATE)
    assert not bad.promoted and bad.candidate_score > bad.production_score and bad.test.high < 0
    assert registry.get_alias("production") == "v1"


def test_bad_gate_config_and_holdout_are_refused_before_anything_is_recorded(tmp_path, models):
    registry = Registry(str(tmp_path), "failures")
    version = register(registry, models["good"])
    with pytest.raises(ConfigError, match="gate.metric 'rmse'"):
        gate_and_promote(registry, version, HOLDOUT, SCHEMA, GateConfig(metric="rmse", mode="min"))
    with pytest.raises(ConfigError, match="gate.mode 'max'"):
        gate_and_promote(registry, version, HOLDOUT, SCHEMA, GateConfig(metric="log_loss"))
    with pytest.raises(DataError, match="failed"):
        gate_and_promote(registry, version, HOLDOUT.drop(columns="failed"), SCHEMA, GATE)
    with pytest.raises(DataError, match="missing values"):
        gate_and_promote(registry, version, HOLDOUT.assign(failed=np.nan), SCHEMA, GATE)
    with pytest.raises(DataError, match="empty"):
        gate_and_promote(registry, version, HOLDOUT.head(0), SCHEMA, GATE)
    with pytest.raises(VersionNotFoundError, match="v9"):
        gate_and_promote(registry, "v9", HOLDOUT, SCHEMA, GATE)
    assert [e["kind"] for e in registry.events()] == ["register"]


def test_log_loss_gate_minimizes(tmp_path, models):
    registry = Registry(str(tmp_path), "failures")
    gate = GateConfig(metric="log_loss", mode="min", margin=0.0)
    first = gate_and_promote(registry, register(registry, models["good"]), HOLDOUT, SCHEMA, gate)
    assert first.promoted and first.candidate_score < first.baseline_score
    assert first.test.test == "paired_bootstrap" and first.test.low > 0
    worse = gate_and_promote(registry, register(registry, models["shuffled"]), HOLDOUT, SCHEMA, gate)
    assert not worse.promoted and worse.candidate_score > worse.production_score


# -- multi-class (real data: scikit-learn's bundled datasets) ------------------------------
def _multiclass_tables(loader, *, words: bool = False):
    """(train, holdout, schema) of a bundled dataset split 2:1, labels as ints or class names."""
    from sklearn.datasets import load_iris, load_wine

    data = {"iris": load_iris, "wine": load_wine}[loader](as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" ", "_").replace("(", "").replace(")", "").replace("/", "_"))
    frame = frame.assign(id=[f"e{i:04d}" for i in range(len(frame))])
    if words:
        frame["target"] = np.asarray(data.target_names)[frame["target"]]
    features = [c for c in frame.columns if c not in ("target", "id")]
    schema = FeatureSchema("id", "target", "classification", {c: "numeric" for c in features})
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    cut = 2 * len(frame) // 3
    return shuffled.iloc[:cut], shuffled.iloc[cut:], schema


def _fit_multiclass(train, schema, *, shuffle: bool = False, C: float = 1.0):
    from sklearn.preprocessing import StandardScaler

    y = train[schema.label].to_numpy()
    if shuffle:
        y = np.random.default_rng(3).permutation(y)
    return Pipeline([("scale", StandardScaler()), ("est", LogisticRegression(C=C, max_iter=2000))]).fit(
        train[list(schema.features)], y)


@pytest.mark.parametrize("loader, words", [("iris", False), ("wine", True)])
@pytest.mark.parametrize("metric, mode", [("roc_auc", "max"), ("log_loss", "min"), ("macro_f1", "max"),
                                          ("accuracy", "max")])
def test_multiclass_gate_compares_with_the_class_prior_then_with_production(tmp_path, loader, words, metric, mode):
    from scipy.stats import entropy

    train, holdout, schema = _multiclass_tables(loader, words=words)
    gate = GateConfig(metric=metric, mode=mode)
    registry = Registry(str(tmp_path), "species")
    good = gate_and_promote(registry, register(registry, _fit_multiclass(train, schema)), holdout, schema, gate)
    assert good.promoted and good.smoke_test.passed, good.reason
    prior = holdout["target"].value_counts(normalize=True).to_numpy()
    expected_baseline = {"roc_auc": 0.5, "log_loss": entropy(prior), "accuracy": prior.max()}
    if metric in expected_baseline:
        assert good.baseline_score == pytest.approx(expected_baseline[metric])
    noise = gate_and_promote(registry, register(registry, _fit_multiclass(train, schema, shuffle=True)),
                             holdout, schema, gate)
    assert not noise.promoted and "is not shown non-inferior to production v1" in noise.reason
    assert noise.test.low < -gate.margin
    assert registry.get_alias("production") == "v1"
    classes = registry.metadata("v1")["classes"]
    assert classes == sorted(train["target"].unique().tolist()) and len(classes) == 3


def test_a_new_multiclass_model_that_does_not_beat_the_prior_stays_out(tmp_path):
    train, holdout, schema = _multiclass_tables("wine")
    registry = Registry(str(tmp_path), "wine")
    gate = GateConfig(metric="log_loss", mode="min")
    decision = gate_and_promote(registry, register(registry, _fit_multiclass(train, schema, shuffle=True)),
                                holdout, schema, gate)
    assert not decision.promoted and "does not beat the baseline significantly" in decision.reason
    assert decision.candidate_score > decision.baseline_score and decision.test.estimate < 0


def test_multiclass_gate_refuses_the_binary_f1_and_unknown_holdout_classes(tmp_path):
    train, holdout, schema = _multiclass_tables("iris", words=True)
    registry = Registry(str(tmp_path), "species")
    version = register(registry, _fit_multiclass(train, schema))
    with pytest.raises(ConfigError, match="gate.metric 'f1' is for two classes.*macro_f1"):
        gate_and_promote(registry, version, holdout, schema, GateConfig(metric="f1"))
    assert registry.get_alias("candidate") is None
    two_species = train[train["target"] != "virginica"]
    narrow = register(registry, _fit_multiclass(two_species, schema))
    decision = gate_and_promote(registry, narrow, holdout, schema, GATE)
    assert not decision.smoke_test.passed and "virginica" in decision.smoke_test.detail


def test_old_gate_keys_keep_working_or_are_refused_by_name(tmp_path):
    assert GateConfig(tolerance=0.01).margin == 0.01
    with pytest.raises(ValueError, match="gate.min_gain_over_baseline was removed"):
        GateConfig(min_gain_over_baseline=0.02)
    path = tmp_path / "old.yaml"
    path.write_text("gate:\n  metric: roc_auc\n  min_gain_over_baseline: 0.02\n")
    with pytest.raises(ConfigError, match="min_gain_over_baseline"):
        load_config(path)
    path.write_text("gate:\n  tolerance: 0.01\n")
    assert load_config(path).gate.margin == 0.01
    assert load_config(None).monitor.retrain.require == "superior" and load_config(None).gate.require == "non_inferior"


def test_registry_show_and_status_print_the_recorded_paired_test(tmp_path, models, capsys):
    from click.testing import CliRunner

    from ray_mlops.cli import _print_monitor, cli
    from ray_mlops.monitor.retraining import GateSummary, RetrainOutcome
    from ray_mlops.monitor.state import MonitorStatus

    registry = Registry(str(tmp_path), "failure-classifier")
    decision = gate_and_promote(registry, register(registry, models["good"]), HOLDOUT, SCHEMA, GATE)
    shown = CliRunner().invoke(cli, ["--storage", str(tmp_path), "registry", "show", "production"])
    assert shown.exit_code == 0, shown.output
    gate = json.loads(shown.output)["gate_decisions"]
    assert [g["test"] for g in gate] == [decision.test.to_json()] and gate[0]["test"]["test"] == "delong"
    entry = RetrainOutcome("r1", "promoted", version="v2",
                           gate=GateSummary(reason=decision.reason, test=decision.test.to_json()))
    _print_monitor(MonitorStatus(running=False, retrain_history=[entry]))
    printed = capsys.readouterr().out
    assert "gate test: delong Δroc_auc=+" in printed and "rows=300" in printed
    assert f"p={decision.test.p_value:.3g}" in printed and "(superior, α=0.05, passed)" in printed
