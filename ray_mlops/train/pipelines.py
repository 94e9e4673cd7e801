"""The model factory: plain scikit-learn Pipelines built from a feature table's schema.

A model is ``Pipeline([("features", ColumnTransformer), ("model", estimator)])``:

* numeric features: median imputation (with missing-value indicators) and scaling;
* categorical features: missing values (``NaN`` or ``None``) become the level
  ``"missing"``, then one-hot encoding that ignores levels unseen in training.

Nothing here is custom code, so the registered artifact loads and can be inspected with
scikit-learn alone (and serialized with skops without trusting extra types).

>>> from ray_mlops.data.schema import FeatureSchema
>>> schema = FeatureSchema("id", "y", "classification", {"x": "numeric", "c": "categorical"})
>>> pipe = build_pipeline(schema, "logistic_regression", {"C": 0.5}, seed=0)
>>> [name for name, _ in pipe.steps]
['features', 'model']
>>> pipe.named_steps["model"].C
0.5
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ray_mlops.data.schema import FeatureSchema
from ray_mlops.errors import TrainError

MISSING_LEVEL = "missing"

#: Families whose estimator trains in stages (reported per stage, early-stoppable).
ITERATIVE_FAMILIES = frozenset({"hist_gradient_boosting"})
#: How many stages an iterative family is trained (and reported) in.
STAGES = 4


def _logistic(params: dict[str, Any], seed: int) -> BaseEstimator:
    return LogisticRegression(**{"max_iter": 1000, **params, "random_state": seed})


def _hgb_classifier(params: dict[str, Any], seed: int) -> BaseEstimator:
    return HistGradientBoostingClassifier(**{"early_stopping": False, **params, "random_state": seed})


def _hgb_regressor(params: dict[str, Any], seed: int) -> BaseEstimator:
    return HistGradientBoostingRegressor(**{"early_stopping": False, **params, "random_state": seed})


def _rf_classifier(params: dict[str, Any], seed: int) -> BaseEstimator:
    return RandomForestClassifier(**{**params, "n_jobs": 1, "random_state": seed})


def _rf_regressor(params: dict[str, Any], seed: int) -> BaseEstimator:
    return RandomForestRegressor(**{**params, "n_jobs": 1, "random_state": seed})


def _ridge(params: dict[str, Any], seed: int) -> BaseEstimator:
    return Ridge(**{**params, "random_state": seed})


ESTIMATORS: dict[str, dict[str, Callable[[dict[str, Any], int], BaseEstimator]]] = {
    "classification": {
        "logistic_regression": _logistic,
        "hist_gradient_boosting": _hgb_classifier,
        "random_forest": _rf_classifier,
    },
    "regression": {
        "ridge": _ridge,
        "hist_gradient_boosting": _hgb_regressor,
        "random_forest": _rf_regressor,
    },
}


def families(task: str) -> list[str]:
    """The estimator families available for ``task`` ("classification" or "regression")."""
    return sorted(ESTIMATORS.get(task, {}))


def build_estimator(task: str, family: str, params: dict[str, Any], seed: int) -> BaseEstimator:
    """The bare estimator of ``family`` for ``task``; a :class:`TrainError` names a bad one."""
    factories = ESTIMATORS.get(task)
    if factories is None:
        raise TrainError(f"unknown task {task!r}; expected one of {sorted(ESTIMATORS)}")
    if family not in factories:
        raise TrainError(
            f"unknown model family {family!r} for {task}; expected one of {families(task)}"
        )
    try:
        return factories[family](dict(params), seed)
    except TypeError as exc:
        raise TrainError(f"family {family!r}: bad parameters {sorted(params)}: {exc}") from exc


def _numeric_branch() -> Pipeline:
    return Pipeline([
        ("impute", SimpleImputer(strategy="median", add_indicator=True)),
        ("scale", StandardScaler()),
    ])


def _categorical_branch() -> Pipeline:
    return Pipeline([
        ("impute_nan", SimpleImputer(strategy="constant", fill_value=MISSING_LEVEL)),
        ("impute_none", SimpleImputer(missing_values=None, strategy="constant", fill_value=MISSING_LEVEL)),
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ])


def build_preprocessor(schema: FeatureSchema) -> ColumnTransformer:
    """The feature step: numeric and categorical branches over the schema's columns."""
    if not schema.features:
        raise TrainError("the feature schema has no features to train on")
    branches = []
    if schema.numeric:
        branches.append(("numeric", _numeric_branch(), schema.numeric))
    if schema.categorical:
        branches.append(("categorical", _categorical_branch(), schema.categorical))
    return ColumnTransformer(branches, remainder="drop", verbose_feature_names_out=True)


def build_pipeline(schema: FeatureSchema, family: str, params: dict[str, Any], seed: int) -> Pipeline:
    """A plain, unfitted Pipeline: feature step + the ``family`` estimator with ``params``."""
    estimator = build_estimator(schema.task, family, params, seed)
    return Pipeline([("features", build_preprocessor(schema)), ("model", estimator)])


def label_values(label: pd.Series, task: str) -> np.ndarray:
    """The label as the estimator sees it: float (regression); int64 or str classes.

    Numeric class labels (ints, bools, integral floats) become int64, anything else str.

    >>> label_values(pd.Series([1.0, 0.0]), "classification").dtype
    dtype('int64')
    >>> label_values(pd.Series(["b", "a"]), "classification").tolist()
    ['b', 'a']
    """
    if task != "classification":
        return label.to_numpy().astype(float)
    if pd.api.types.is_bool_dtype(label) or pd.api.types.is_numeric_dtype(label):
        return label.to_numpy().astype(np.int64)
    return label.map(str).to_numpy(dtype=object)


def features_and_label(frame: pd.DataFrame, schema: FeatureSchema) -> tuple[pd.DataFrame, np.ndarray]:
    """The feature columns (in schema order) and the label as a numpy array."""
    return frame[list(schema.features)], label_values(frame[schema.label], schema.task)


def stage_schedule(total: int, stages: int = STAGES) -> list[int]:
    """Cumulative iteration counts at which an iterative estimator reports.

    >>> stage_schedule(200)
    [50, 100, 150, 200]
    >>> stage_schedule(3)
    [1, 2, 3]
    """
    points = {max(1, round(total * (k + 1) / stages)) for k in range(stages)}
    return sorted(points)


def fit_stages(pipeline: Pipeline, X: pd.DataFrame, y: np.ndarray, family: str) -> Iterator[int]:
    """Fit ``pipeline`` in place, yielding the iteration count after each stage.

    Non-iterative families fit once and yield ``0``. Iterative ones fit the feature step
    once, then grow the estimator with ``warm_start`` to each point of
    :func:`stage_schedule`; the result after the last stage equals a direct fit with the
    same seed, and stopping after stage *k* is reproduced by fitting with
    ``max_iter`` set to the yielded count.
    """
    if family not in ITERATIVE_FAMILIES:
        pipeline.fit(X, y)
        yield 0
        return
    features, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
    transformed = features.fit_transform(X, y)
    for n_iter in stage_schedule(model.max_iter):
        model.set_params(warm_start=True, max_iter=n_iter)
        model.fit(transformed, y)
        yield n_iter
    model.set_params(warm_start=False)


def fit_pipeline(
    schema: FeatureSchema, family: str, params: dict[str, Any], seed: int, frame: pd.DataFrame
) -> Pipeline:
    """Build and fully fit the pipeline of ``family`` on ``frame`` (deterministic in ``seed``)."""
    pipeline = build_pipeline(schema, family, params, seed)
    X, y = features_and_label(frame, schema)
    for _ in fit_stages(pipeline, X, y, family):
        pass
    return pipeline


def key_fraction(key: Any) -> float:
    """A stable number in [0, 1) from an entity key: sha1 of its string form.

    >>> key_fraction("machine-0001") == key_fraction("machine-0001")
    True
    >>> 0.0 <= key_fraction(42) < 1.0
    True
    """
    digest = hashlib.sha1(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_key(frame: pd.DataFrame, key: str, validation_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``frame`` into (train, valid) by a hash of the ``key`` column.

    A row lands in validation when the sha1 fraction of its key is below
    ``validation_fraction``: the same entity always lands on the same side, on every run
    and machine, whatever the row order. Both parts keep the input's row order.
    """
    if key not in frame.columns:
        raise TrainError(f"entity key column {key!r} is not in the feature table")
    if not 0.0 < validation_fraction < 1.0:
        raise TrainError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    in_valid = frame[key].map(key_fraction).to_numpy() < validation_fraction
    return frame[~in_valid].reset_index(drop=True), frame[in_valid].reset_index(drop=True)


__all__ = [
    "ESTIMATORS",
    "ITERATIVE_FAMILIES",
    "MISSING_LEVEL",
    "STAGES",
    "build_estimator",
    "build_pipeline",
    "build_preprocessor",
    "families",
    "features_and_label",
    "fit_pipeline",
    "fit_stages",
    "key_fraction",
    "label_values",
    "split_by_key",
    "stage_schedule",
]
