"""Model pipelines and the Ray Tune search (real Ray, tiny data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from train_fixtures import FEATURES, make_table, tiny_config

from ray_mlops.config import SearchParam, TrainConfig, load_config
from ray_mlops.data.schema import FeatureSchema
from ray_mlops.errors import TrainError
from ray_mlops.storage import Storage
from ray_mlops.train.pipelines import (
    build_pipeline,
    families,
    features_and_label,
    fit_pipeline,
    fit_stages,
    key_fraction,
    split_by_key,
)
from ray_mlops.train.search import (
    check_train_config,
    run_search,
    search_space,
    train_trial,
)

# -- pipelines (no Ray) --------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_family_fits_and_predicts_with_nans_and_unseen_levels(task):
    frame, schema = make_table(task=task)
    unseen = frame.head(5).copy()
    unseen["site"] = ["west", None, np.nan, "north", "moon"]
    unseen["model"] = ["Z999", "A100", None, "B200", "C300"]
    unseen["temp"] = np.nan
    for family in families(task):
        model = fit_pipeline(schema, family, {}, seed=0, frame=frame)
        assert isinstance(model, Pipeline) and [n for n, _ in model.steps] == ["features", "model"]
        X, _ = features_and_label(unseen, schema)
        predictions = model.predict(X)
        assert predictions.shape == (5,) and np.isfinite(predictions).all()
        if task == "classification":
            proba = model.predict_proba(X)
            assert proba.shape == (5, 2) and np.allclose(proba.sum(axis=1), 1.0)


def test_unknown_family_and_bad_params_are_named():
    _, schema = make_table(n=10)
    with pytest.raises(TrainError, match="'xgboost'"):
        build_pipeline(schema, "xgboost", {}, seed=0)
    regression = FeatureSchema("machine_id", "failed", "regression", dict(FEATURES))
    with pytest.raises(TrainError, match="'logistic_regression'"):
        build_pipeline(regression, "logistic_regression", {}, seed=0)


def test_staged_fit_equals_a_direct_fit():
    frame, schema = make_table()
    params = {"max_iter": 12, "learning_rate": 0.2}
    staged = build_pipeline(schema, "hist_gradient_boosting", params, seed=3)
    X, y = features_and_label(frame, schema)
    assert list(fit_stages(staged, X, y, "hist_gradient_boosting")) == [3, 6, 9, 12]
    direct = build_pipeline(schema, "hist_gradient_boosting", params, seed=3).fit(X, y)
    assert np.array_equal(staged.predict_proba(X), direct.predict_proba(X))
    assert staged.named_steps["model"].warm_start is False


def test_split_by_key_is_stable_and_order_independent():
    frame, _ = make_table(n=2000)
    train, valid = split_by_key(frame, "machine_id", 0.2)
    assert len(train) + len(valid) == len(frame)
    assert 0.15 < len(valid) / len(frame) < 0.25
    shuffled = frame.sample(frac=1.0, random_state=1)
    _, valid_again = split_by_key(shuffled, "machine_id", 0.2)
    assert set(valid_again["machine_id"]) == set(valid["machine_id"])
    assert not set(train["machine_id"]) & set(valid["machine_id"])
    # pinned: sha1("m-00000")[:8] as a fraction is the same on every machine and run
    assert key_fraction("m-00000") == int("4f754d7a7b5077f1", 16) / 2**64 == 0.31038364639545246
    assert split_by_key(frame, "machine_id", 0.2)[1].equals(valid)


def test_search_space_is_built_from_config():
    space = search_space(load_config().train)
    assert space["family"].categories == ["logistic_regression", "hist_gradient_boosting", "random_forest"]
    assert space["hist_gradient_boosting"]["max_iter"] == 200
    assert space["random_forest"]["max_depth"].categories == [6, 10, None]
    assert (space["random_forest"]["n_estimators"].lower, space["random_forest"]["n_estimators"].upper) == (50, 200)
    check_train_config(load_config().train, "classification")


# -- bad input: a TrainError before any trial ------------------------------------------------
def _bad_space(family: str, param: str, spec: dict) -> TrainConfig:
    config = tiny_config()
    config.families[family].search_space[param] = SearchParam.model_construct(**{
        "low": None, "high": None, "values": None, "value": None, **spec})
    return config


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mutate, config, message", [
    (lambda f: f.iloc[0:0], None, "empty"),
    (lambda f: f.assign(failed=0), None, "single class"),
    (lambda f: f.assign(failed=f["failed"].where(f.index % 50 != 0)), None, "missing values"),
    (lambda f: f.drop(columns=["vib"]), None, "lacks columns"),
    (lambda f: f.assign(failed=f["failed"] + 0.5), None, "non-integer"),
    (lambda f: f.assign(failed=np.arange(len(f)) % 3), tiny_config(metric="f1"), "'f1' is for two classes"),
    (lambda f: f.head(3), None, "split"),
    (None, _bad_space("random_forest", "max_depth", {"type": "choice", "values": ["deep"]}), "max_depth"),
    (None, _bad_space("random_forest", "n_estimators", {"type": "randint", "low": 1.5, "high": 9}), "cannot be sampled"),
    (None, _bad_space("logistic_regression", "C", {"type": "uniform", "low": -1.0, "high": 1.0}), "'C'"),
    (None, _bad_space("logistic_regression", "bogus", {"type": "fixed", "value": 1}), "bogus"),
    (None, tiny_config(families={"svm": {}}), "'svm'"),
    (None, tiny_config(families={"random_forest": {"enabled": False}}), "no model family"),
    (None, tiny_config(metric="rmse"), "rmse"),
    (None, tiny_config(metric="log_loss"), "train.mode 'max' contradicts train.metric 'log_loss'"),
])
def test_bad_input_fails_before_any_trial(tmp_path, mutate, config, message):
    frame, schema = make_table()
    if mutate is not None:
        frame = mutate(frame)
    storage = Storage(str(tmp_path / "store"))
    with pytest.raises(TrainError, match=message):
        run_search(frame, schema, config or tiny_config(), storage)
    assert not (tmp_path / "store" / "tune").exists()


# -- the Tune search ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def searched(ray_session, tmp_path_factory):
    """One search on the tiny table, shared by the tests that only read its result."""
    frame, schema = make_table(seed=3)
    storage = Storage(str(tmp_path_factory.mktemp("search")))
    return frame, schema, storage, run_search(frame, schema, tiny_config(), storage)


@pytest.mark.timeout(120)
def test_search_returns_the_refit_best_model(searched):
    frame, schema, storage, result = searched
    config = tiny_config()
    trials = result.trials
    assert len(trials) == 4 and (trials["status"] == "ok").all()
    assert set(trials["family"]) == {"logistic_regression", "hist_gradient_boosting", "random_forest"}
    assert set(result.metrics) == {"roc_auc", "log_loss", "accuracy", "f1", "macro_f1"}
    assert result.classes == [0, 1]
    assert result.score == pytest.approx(trials["roc_auc"].max(), abs=1e-12)
    assert isinstance(result.model, Pipeline)
    train, valid = split_by_key(frame.sort_values("machine_id"), "machine_id", 0.2)
    assert list(result.validation["machine_id"]) == list(valid["machine_id"])
    X, y = features_and_label(result.validation, schema)
    assert result.model.predict_proba(X).shape == (len(y), 2)
    rebuilt = fit_pipeline(schema, result.family, result.params, config.seed, train)
    assert np.array_equal(rebuilt.predict_proba(X), result.model.predict_proba(X))
    hgb = trials[trials["family"] == "hist_gradient_boosting"].iloc[0]
    assert hgb["training_iteration"] >= 1 and hgb["n_iter"] in (2, 4, 6, 8)
    assert Path(result.experiment_path).parent == Path(storage.path("tune"))
    assert (Path(result.experiment_path) / "experiment_state").exists() or any(
        Path(result.experiment_path).glob("experiment_state*.json"))


@pytest.mark.slow  # a second search (~5 s)
@pytest.mark.timeout(120)
def test_same_data_config_and_seed_give_identical_predictions(searched):
    frame, schema, storage, first = searched
    shuffled = frame.sample(frac=1.0, random_state=5)
    second = run_search(shuffled, schema, tiny_config(), storage, resume=False)
    assert second.name != first.name  # a fresh search, not a read of the first one
    assert (first.family, first.params) == (second.family, second.params)
    X, _ = features_and_label(first.validation, schema)
    assert np.array_equal(first.model.predict_proba(X), second.model.predict_proba(X))
    columns = ["family", "params", "roc_auc"]
    assert first.trials[columns].equals(second.trials[columns])


def test_a_finished_search_is_read_back_not_rerun(searched):
    frame, schema, storage, first = searched
    again = run_search(frame, schema, tiny_config(), storage)
    assert again.name == first.name
    assert list(again.trials["trial_id"]) == list(first.trials["trial_id"])


def _fails_first_time(marker_dir: str, family: str):
    """A trial function that crashes the first attempt of every ``family`` trial."""

    def trial(config, data):
        from ray import tune

        marker = os.path.join(marker_dir, tune.get_context().get_trial_id())
        with open(f"{marker}.runs", "a") as runs:
            runs.write("x")
        if config["family"] == family and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected failure")
        train_trial(config, data)

    return trial


def _runs(marker_dir: Path) -> dict[str, int]:
    return {p.name.removesuffix(".runs"): len(p.read_text()) for p in marker_dir.glob("*.runs")}


@pytest.mark.slow  # a second Tune search (~7 s)
@pytest.mark.timeout(120)
def test_a_failed_trial_is_retried(ray_session, tmp_path):
    frame, schema = make_table()
    markers = tmp_path / "markers"
    markers.mkdir()
    trial = _fails_first_time(str(markers), "random_forest")
    config = tiny_config(max_failures=1, num_samples=3)
    result = run_search(frame, schema, config, Storage(str(tmp_path)), trial_fn=trial)
    assert (result.trials["status"] == "ok").all()
    retried = {tid for tid, n in _runs(markers).items() if n == 2}
    assert retried and retried == set(result.trials.loc[result.trials["family"] == "random_forest", "trial_id"])


@pytest.mark.slow  # two Tune searches (~10 s)
@pytest.mark.timeout(120)
def test_an_interrupted_search_resumes_where_it_stopped(ray_session, tmp_path):
    frame, schema = make_table()
    markers = tmp_path / "markers"
    markers.mkdir()
    storage = Storage(str(tmp_path))
    trial = _fails_first_time(str(markers), "random_forest")
    config = tiny_config(max_failures=0, num_samples=3)
    interrupted = run_search(frame, schema, config, storage, trial_fn=trial)
    failed = set(interrupted.trials.loc[interrupted.trials["status"] == "error", "trial_id"])
    assert failed and interrupted.family != "random_forest"
    before = _runs(markers)

    resumed = run_search(frame, schema, config, storage, trial_fn=trial)
    assert resumed.name == interrupted.name
    assert (resumed.trials["status"] == "ok").all()
    assert list(resumed.trials["trial_id"]) == list(interrupted.trials["trial_id"])
    after = _runs(markers)
    assert {t for t in after if after[t] != before[t]} == failed  # finished trials did not run again


@pytest.mark.slow  # a Tune search per metric (~14 s)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("metric, mode", [("roc_auc", "max"), ("log_loss", "min")])
def test_a_multiclass_search_with_string_labels_picks_and_refits_the_best(ray_session, tmp_path, metric, mode):
    from test_multiclass import bundled_table
    from sklearn.datasets import load_wine

    frame, schema = bundled_table(load_wine, words=True)
    config = tiny_config(metric=metric, mode=mode, validation_fraction=0.3)
    result = run_search(frame, schema, config, Storage(str(tmp_path)))
    assert (result.trials["status"] == "ok").all()
    assert set(result.metrics) == {"roc_auc", "log_loss", "accuracy", "macro_f1"}
    assert result.trials["f1"].isna().all() and result.trials["macro_f1"].notna().all()
    best = result.trials[metric].max() if mode == "max" else result.trials[metric].min()
    assert result.score == pytest.approx(best, abs=1e-9)
    assert result.classes == ["class_0", "class_1", "class_2"]
    assert result.metrics["accuracy"] > 0.85 and result.metrics["roc_auc"] > 0.95
