"""Learned text features inside the Pipeline: TF-IDF steps, dense-only estimators, skops round trip.

Real text: the opening paragraphs of SciPy's docstrings (see ``text_fixtures``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from text_fixtures import docstring_table
from train_fixtures import tiny_config

from ray_mlops.config import TrainConfig
from ray_mlops.errors import TrainError
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage
from ray_mlops.train.estimators import declared_types
from ray_mlops.train.pipelines import build_pipeline, features_and_label, fit_pipeline
from ray_mlops.train.search import _split, check_train_config, evaluate, run_search

TEXT = {"max_features": 3000, "char_ngrams": [2, 4], "svd_components": 30}


def text_config(**changes) -> TrainConfig:
    return TrainConfig.model_validate({"text": {**TEXT, **changes.pop("text", {})}, **changes})


@pytest.fixture(scope="module")
def split():
    frame, schema = docstring_table()
    train, valid = _split(frame, schema, 0.3)
    return schema, train, valid


def test_each_text_column_gets_word_and_char_tfidf_steps(split):
    schema, train, valid = split
    model = fit_pipeline(schema, "logistic_regression", {"C": 10.0}, 0, train, text_config())
    features = model.named_steps["features"]
    assert [name for name, _, _ in features.transformers] == ["numeric", "categorical", "doc_text_word", "doc_text_char"]
    word = features.named_transformers_["doc_text_word"].named_steps["tfidf"]
    char = features.named_transformers_["doc_text_char"].named_steps["tfidf"]
    assert isinstance(word, TfidfVectorizer) and (word.analyzer, word.ngram_range, word.sublinear_tf) == ("word", (1, 2), True)
    assert (char.analyzer, char.ngram_range, char.max_features) == ("char_wb", (2, 4), 3000)
    assert 0 < len(word.vocabulary_) <= 3000 and "matrix" in word.vocabulary_
    X, _ = features_and_label(valid, schema)
    assert sp.issparse(features.transform(X))
    metrics = evaluate(model, valid, schema)
    assert metrics["accuracy"] > 0.85 and metrics["roc_auc"] > 0.95, metrics


def test_the_pipeline_equals_plain_tfidf_plus_logistic_regression(split):
    """Only text: our model is exactly scikit-learn's TF-IDF + logistic regression."""
    schema, train, valid = split
    only_text = schema.__class__(schema.entity_key, schema.label, schema.task, {"doc__text": "text"})
    cfg = text_config(text={"char_ngrams": None, "max_features": None, "min_df": 1})
    ours = fit_pipeline(only_text, "logistic_regression", {"C": 10.0}, 0, train, cfg)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    plain = LogisticRegression(C=10.0, max_iter=1000, random_state=0).fit(
        vectorizer.fit_transform(train["doc__text"]), train["module"])
    X, _ = features_and_label(valid, only_text)
    expected = plain.predict_proba(vectorizer.transform(valid["doc__text"]))
    assert np.allclose(ours.predict_proba(X), expected, atol=1e-8)


def test_dense_only_estimators_get_a_truncated_svd_per_step(split):
    schema, train, valid = split
    cfg = text_config()
    model = fit_pipeline(schema, "hist_gradient_boosting", {"max_iter": 30}, 0, train, cfg)
    features = model.named_steps["features"]
    svd = features.named_transformers_["doc_text_word"].named_steps["svd"]
    assert isinstance(svd, TruncatedSVD) and svd.n_components == 30
    X, _ = features_and_label(valid, schema)
    assert not sp.issparse(features.transform(X))
    assert evaluate(model, valid, schema)["accuracy"] > 0.7
    forest = build_pipeline(schema, "random_forest", {}, 0, cfg).named_steps["features"]
    assert "svd" not in dict(forest.transformers[-1][1].steps)  # random forests take sparse input


def test_text_steps_are_searchable_by_pipeline_paths_and_bad_paths_are_named(split):
    schema, train, _ = split
    path = "features__doc_text_word__tfidf__max_features"
    cfg = text_config(families={"logistic_regression": {"search_space": {
        path: {"type": "choice", "values": [50, 500]},
        "features__doc_text_char__tfidf__ngram_range": {"type": "fixed", "value": [1, 3]}}}})
    check_train_config(cfg, "classification", schema)
    params = {path: 50, "features__doc_text_char__tfidf__ngram_range": [1, 3]}  # as a trial samples them
    model = fit_pipeline(schema, "logistic_regression", params, 0, train, cfg)
    features = model.named_steps["features"].named_transformers_
    assert len(features["doc_text_word"].named_steps["tfidf"].vocabulary_) == 50
    assert features["doc_text_char"].named_steps["tfidf"].ngram_range == (1, 3)
    typo = text_config(families={"logistic_regression": {"search_space": {
        "features__doc_word__tfidf__max_features": {"type": "fixed", "value": 5}}}})
    with pytest.raises(TrainError, match="features__doc_word__tfidf__max_features"):
        check_train_config(typo, "classification", schema)
    negative = text_config(families={"logistic_regression": {"search_space": {
        path: {"type": "fixed", "value": -3}}}})
    with pytest.raises(TrainError, match=f"search_space.{path}: value -3"):
        check_train_config(negative, "classification", schema)


def test_a_text_step_that_cannot_fit_is_a_train_error(split):
    schema, train, _ = split
    with pytest.raises(TrainError, match="text step cannot be fitted.*min_df"):
        fit_pipeline(schema, "logistic_regression", {}, 0, train, text_config(text={"min_df": 0.99}))



def test_a_vocabulary_smaller_than_svd_components_caps_the_svd(split):
    schema, train, valid = split
    cfg = text_config(text={"svd_components": 5000, "max_features": 40, "char_ngrams": None})
    model = fit_pipeline(schema, "hist_gradient_boosting", {"max_iter": 5}, 0, train, cfg)
    word = model.named_steps["features"].named_transformers_["doc_text_word"]
    assert word.named_steps["svd"].n_components == len(word.named_steps["tfidf"].vocabulary_) == 40
    X, _ = features_and_label(valid, schema)
    assert model.predict_proba(X).shape == (len(valid), 3)


def test_a_text_model_round_trips_through_the_registry_with_sklearn_types_only(split, tmp_path):
    schema, train, valid = split
    model = fit_pipeline(schema, "hist_gradient_boosting", {"max_iter": 10}, 0, train, text_config())
    registry = Registry(Storage(str(tmp_path)), "docs")
    version = registry.register(model, params={}, metrics={}, data_fingerprint="f", config_hash="c")
    meta = registry.metadata(version)
    assert meta["artifact"]["declared_types"] == [] and meta["classes"] == ["linalg", "signal", "stats"]
    X, _ = features_and_label(valid, schema)
    assert np.array_equal(registry.load(version).predict_proba(X), model.predict_proba(X))


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a Tune search on text (~12 s)
@pytest.mark.timeout(300)
def test_a_tune_search_over_text_families_and_a_user_estimator(ray_session, tmp_path, monkeypatch):
    # Ray ships the driver's working directory (the repo root) to its workers' sys.path, as it
    # would a user's project folder: the user's module is `tests.user_estimators` from there.
    monkeypatch.syspath_prepend(str(REPO))
    frame, schema = docstring_table(words=False)
    families = {
        **tiny_config().model_dump()["families"],
        "mine": {"estimator": "tests.user_estimators.SoftCentroidClassifier",
                 "trusted_types": ["tests.user_estimators.CentroidCounts"],
                 "search_space": {"temperature": {"type": "loguniform", "low": 1.0, "high": 100.0}}},
    }
    families["logistic_regression"]["search_space"]["features__doc_text_word__tfidf__max_features"] = {
        "type": "choice", "values": [300, 3000]}
    cfg = text_config(families=families, num_samples=5, seed=7, validation_fraction=0.3)
    result = run_search(frame, schema, cfg, Storage(str(tmp_path)))
    trials = result.trials
    assert (trials["status"] == "ok").all(), trials["error"].tolist()
    assert set(trials["family"]) == {"logistic_regression", "hist_gradient_boosting", "random_forest", "mine"}
    assert result.score == pytest.approx(trials["roc_auc"].max(), abs=1e-9)
    assert result.classes == [0, 1, 2] and result.metrics["accuracy"] > 0.8
    lr = trials[trials["family"] == "logistic_regression"].iloc[0]
    assert lr["params"]["features__doc_text_word__tfidf__max_features"] in (300, 3000)
    mine = fit_pipeline(schema, "mine", {"temperature": 10.0}, 7, result.validation, cfg)
    registry = Registry(Storage(str(tmp_path)), "docs")
    declared = ["tests.user_estimators.CentroidCounts", "tests.user_estimators.SoftCentroidClassifier"]
    family = cfg.families["mine"]
    assert declared_types("classification", "mine", family.estimator, family.trusted_types) == declared
    version = registry.register(mine, params={}, metrics={}, data_fingerprint="f", config_hash="c",
                                trusted_types=declared)
    assert registry.metadata(version)["artifact"]["declared_types"] == declared
    if result.family == "mine":
        assert result.trusted_types == declared


@pytest.mark.parametrize("family", ["ridge", "hist_gradient_boosting"])
def test_regression_learns_from_text_too(split, family):
    schema, train, valid = split
    regression = schema.__class__("id", "lines", "regression", {"doc__text": "text", "shelf": "categorical"})
    model = fit_pipeline(regression, family, {"max_iter": 50} if family != "ridge" else {}, 0, train, text_config())
    metrics = evaluate(model, valid, regression)
    assert metrics["r2"] > 0.2, metrics
