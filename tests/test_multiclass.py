"""Multi-class training without Ray: metrics against scikit-learn, labels, and the table checks.

Real data: scikit-learn's bundled digits, iris and wine (never downloaded).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ray_mlops.data.schema import FeatureSchema
from ray_mlops.errors import TrainError
from ray_mlops.train.metrics import classification_metrics, metric_names
from ray_mlops.train.pipelines import features_and_label, fit_pipeline, key_fraction
from ray_mlops.train.search import _split, check_table, evaluate


def bundled_table(loader, *, words: bool = False) -> tuple[pd.DataFrame, FeatureSchema]:
    """A bundled dataset as a feature table: an entity key, numeric features, the label."""
    data = loader()
    features = {f"f{i}": "numeric" for i in range(data.data.shape[1])}
    frame = pd.DataFrame(data.data, columns=list(features))
    frame.insert(0, "id", [f"e{i:05d}" for i in range(len(frame))])
    labels = np.asarray(data.target_names)[data.target] if words else data.target.astype(np.int64)
    frame["label"] = labels
    return frame, FeatureSchema("id", "label", "classification", features)


def _proba(loader):
    X, y = loader(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.05)).fit(X[::2], y[::2])
    return y[1::2], model.predict_proba(X[1::2]), model.classes_


@pytest.mark.parametrize("loader", [load_digits, load_iris, load_wine])
def test_multiclass_metrics_equal_scikit_learn(loader):
    y, proba, classes = _proba(loader)
    ours = classification_metrics(y, proba, classes)
    assert set(ours) == set(metric_names("classification", len(classes))) and "f1" not in ours
    predicted = classes[proba.argmax(axis=1)]
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-12)
    assert ours["macro_f1"] == pytest.approx(skm.f1_score(y, predicted, average="macro"), abs=1e-12)
    assert ours["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=classes), abs=1e-9)
    assert ours["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"), abs=1e-12)


def test_string_labels_give_the_same_metrics_as_their_codes():
    y, proba, classes = _proba(load_wine)
    names = np.array(["barolo", "grignolino", "barbera"])
    assert classification_metrics(names[y], proba, names[classes]) == classification_metrics(y, proba, classes)


def test_binary_metrics_keep_their_values_and_add_macro_f1():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 500), 0, 1)
    ours = classification_metrics(y, np.column_stack([1 - p, p]), [0, 1])
    assert ours == classification_metrics(y, p)  # the positive column alone is the same
    assert ours["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert ours["f1"] == pytest.approx(skm.f1_score(y, p >= 0.5))
    assert ours["macro_f1"] == pytest.approx(skm.f1_score(y, p >= 0.5, average="macro"))
    worded = classification_metrics(np.where(y == 1, "yes", "no"), np.column_stack([1 - p, p]), ["no", "yes"])
    assert worded == ours


def test_ovr_auc_averages_over_the_classes_present():
    y, proba, classes = _proba(load_iris)
    kept = y != 2
    ours = classification_metrics(y[kept], proba[kept], classes)["roc_auc"]
    expected = np.mean([skm.roc_auc_score(y[kept] == k, proba[kept, k]) for k in (0, 1)])
    assert ours == pytest.approx(expected)
    with pytest.raises(ValueError, match="not among the classes"):
        classification_metrics(np.array([7, 0]), proba[:2], classes)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loader, words", [(load_digits, False), (load_iris, True), (load_wine, True)])
def test_every_family_trains_multiclass_with_int_or_string_labels(loader, words):
    frame, schema = bundled_table(loader, words=words)
    train, valid = _split(frame, schema, 0.3)
    for family, floor in [("logistic_regression", 0.85), ("random_forest", 0.85), ("hist_gradient_boosting", 0.8)]:
        params = {"max_iter": 40} if family == "hist_gradient_boosting" else {}
        model = fit_pipeline(schema, family, params, seed=0, frame=train)
        assert sorted(model.classes_.tolist()) == sorted(frame["label"].unique().tolist())
        metrics = evaluate(model, valid, schema)
        assert metrics["accuracy"] > floor, (family, metrics)
        assert metrics["roc_auc"] > 0.9 and 0 < metrics["log_loss"] < 1.0
        X, _ = features_and_label(valid.head(3), schema)
        assert set(model.predict(X)) <= set(model.classes_)


def test_label_checks_name_the_problem():
    frame, schema = bundled_table(load_iris, words=True)
    check_table(frame, schema)
    with pytest.raises(TrainError, match="single class"):
        check_table(frame.assign(label="setosa"), schema)
    with pytest.raises(TrainError, match="non-integer values"):
        check_table(frame.assign(label=frame.index % 3 + 0.5), schema)
    in_valid = frame["id"].map(key_fraction) < 0.3
    lone = frame.assign(label=frame["label"].where(~in_valid | (frame.index % 7 != 0), "unicorn"))
    assert (lone["label"] == "unicorn").sum() > 0
    with pytest.raises(TrainError, match=r"classes \['unicorn'\] occur only in the validation split"):
        _split(lone, schema, 0.3)


def test_vector_columns_are_scaled_numbers_without_missing_indicators():
    """Digit scans as a pixel vector: near logistic regression on the raw pixels, same rows."""
    frame, numeric = bundled_table(load_digits)
    schema = FeatureSchema("id", "label", "classification", {name: "vector" for name in numeric.features})
    train, valid = _split(frame, schema, 0.3)
    model = fit_pipeline(schema, "logistic_regression", {"C": 0.1}, 0, train)
    features = model.named_steps["features"]
    assert [name for name, _, _ in features.transformers] == ["vector"]
    X, _ = features_and_label(valid, schema)
    assert features.transform(X).shape[1] == 64  # no indicator columns
    ours = evaluate(model, valid, schema)["accuracy"]
    pixels = list(schema.features)
    plain = LogisticRegression(max_iter=5000).fit(train[pixels] / 16.0, train["label"])
    baseline = float(np.mean(plain.predict(valid[pixels] / 16.0) == valid["label"]))
    assert ours > baseline - 0.03, (ours, baseline)
