"""The model factory: plain scikit-learn Pipelines built from a feature table's schema.

A model is ``Pipeline([("features", ColumnTransformer), ("model", estimator)])``; the
ColumnTransformer's steps, by feature kind (their names are ``Pipeline.set_params`` paths
under ``features__``):

* ``numeric``: median imputation (with missing-value indicators) and scaling;
* ``vector``: the components of a fixed-length representation: median imputation and
  scaling, no indicators;
* ``categorical``: missing values (``NaN`` or ``None``) become the level ``"missing"``,
  then one-hot encoding that ignores levels unseen in training;
* each ``text`` column ``c``: ``<c>_word`` (word n-grams) and ``<c>_char`` (``char_wb``
  n-grams), each ``Pipeline([("tfidf", TfidfVectorizer)])`` with the ``train.text``
  defaults, plus ``("svd", TruncatedSVD)`` when the estimator takes no sparse input (by its
  scikit-learn tags). ``c`` in a step name has runs of ``_`` collapsed to one
  (``notes__text`` → ``notes_text_word``), so a search-space key
  ``features__notes_text_word__tfidf__max_features`` reaches it.

The vocabulary is learned in ``fit`` and travels with the artifact: training and serving
cannot disagree. Nothing here is custom code, so the registered artifact loads and can be
inspected with scikit-learn alone (and serialized with skops without trusting extra types).

>>> from ray_mlops.data.schema import FeatureSchema
>>> schema = FeatureSchema("id", "y", "classification", {"x": "numeric", "c": "categorical", "notes": "text"})
>>> pipe = build_pipeline(schema, "logistic_regression", {"C": 0.5}, seed=0)
>>> [name for name, _ in pipe.steps], pipe.named_steps["model"].C
(['features', 'model'], 0.5)
>>> [name for name, _, _ in pipe.named_steps["features"].transformers]
['numeric', 'categorical', 'notes_word', 'notes_char']
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ray_mlops.config import FamilyConfig, TextConfig, TrainConfig
from ray_mlops.data.schema import FeatureSchema
from ray_mlops.errors import TrainError
from ray_mlops.train.estimators import accepts_sparse, build_estimator, families, is_iterative

MISSING_LEVEL = "missing"

#: How many stages an iterative family (:func:`~ray_mlops.train.estimators.is_iterative`) is trained (and reported) in.
STAGES = 4


def _numeric_branch() -> Pipeline:
    return Pipeline([
        ("impute", SimpleImputer(strategy="median", add_indicator=True)),
        ("scale", StandardScaler()),
    ])


def _vector_branch() -> Pipeline:
    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
    ])


def _categorical_branch() -> Pipeline:
    return Pipeline([
        ("impute_nan", SimpleImputer(strategy="constant", fill_value=MISSING_LEVEL)),
        ("impute_none", SimpleImputer(missing_values=None, strategy="constant", fill_value=MISSING_LEVEL)),
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ])


def text_step_name(column: str) -> str:
    """The ColumnTransformer step prefix of a text column: runs of ``_`` collapsed.

    >>> text_step_name("notes__text")
    'notes_text'
    """
    return re.sub(r"_{2,}", "_", column).strip("_") or "text"


def _tfidf_branch(analyzer: str, ngrams: tuple[int, int], text: TextConfig, dense: bool, seed: int) -> Pipeline:
    steps: list[tuple[str, Any]] = [("tfidf", TfidfVectorizer(
        analyzer=analyzer, ngram_range=tuple(ngrams), max_features=text.max_features,
        min_df=text.min_df, sublinear_tf=text.sublinear_tf, dtype=np.float64))]
    if dense:
        steps.append(("svd", TruncatedSVD(n_components=text.svd_components, random_state=seed)))
    return Pipeline(steps)


def _text_branches(schema: FeatureSchema, text: TextConfig, dense: bool, seed: int) -> list[tuple[str, Any, str]]:
    branches, used = [], set()
    for column in schema.text:
        prefix = text_step_name(column)
        if prefix in used:
            raise TrainError(f"text columns {sorted(c for c in schema.text if text_step_name(c) == prefix)} "
                             f"share the step name {prefix!r}; rename one")
        used.add(prefix)
        for kind, analyzer, ngrams in (("word", "word", text.word_ngrams), ("char", "char_wb", text.char_ngrams)):
            if ngrams is not None:
                branches.append((f"{prefix}_{kind}", _tfidf_branch(analyzer, ngrams, text, dense, seed), column))
    return branches


def build_preprocessor(schema: FeatureSchema, text: TextConfig | None = None, *, dense: bool = False,
                       seed: int = 0) -> ColumnTransformer:
    """The feature step over the schema's columns (``dense``: text reduced by TruncatedSVD)."""
    if not schema.features:
        raise TrainError("the feature schema has no features to train on")
    branches: list[tuple[str, Any, Any]] = []
    if schema.numeric:
        branches.append(("numeric", _numeric_branch(), schema.numeric))
    if schema.vector:
        branches.append(("vector", _vector_branch(), schema.vector))
    if schema.categorical:
        branches.append(("categorical", _categorical_branch(), schema.categorical))
    branches += _text_branches(schema, text or TextConfig(), dense, seed)
    return ColumnTransformer(branches, remainder="drop", verbose_feature_names_out=True)


def _split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(estimator constructor params, ``Pipeline.set_params`` paths: keys with ``__``).

    A list value of a path becomes a tuple (YAML has no tuples; ``ngram_range`` wants one).
    """
    paths = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if "__" in k}
    return {k: v for k, v in params.items() if k not in paths}, paths


def build_pipeline(schema: FeatureSchema, family: str, params: dict[str, Any], seed: int,
                   config: TrainConfig | None = None) -> Pipeline:
    """A plain, unfitted Pipeline: feature step + the ``family`` estimator with ``params``.

    ``config`` (default: the built-in train config) gives the family's ``estimator``
    import path and fixed ``params``, and the ``text`` defaults. Keys of ``params`` with
    ``__`` are set on the Pipeline (``features__notes_word__tfidf__min_df``).
    """
    config = config or TrainConfig()
    family_config = config.families.get(family) or FamilyConfig()
    own, paths = _split_params({**family_config.params, **params})
    estimator = build_estimator(schema.task, family, own, seed, family_config.estimator)
    features = build_preprocessor(schema, config.text, dense=not accepts_sparse(estimator), seed=seed)
    pipeline = Pipeline([("features", features), ("model", estimator)])
    try:
        pipeline.set_params(**paths)
    except ValueError as exc:
        raise TrainError(f"family {family!r}: bad pipeline parameter in {sorted(paths)}: {exc}") from exc
    return pipeline


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


def fit_stages(pipeline: Pipeline, X: pd.DataFrame, y: np.ndarray, family: str | None = None) -> Iterator[int]:
    """Fit ``pipeline`` in place, yielding the iteration count after each stage.

    Whether it is staged depends on its estimator (:func:`is_iterative`; ``family`` is only
    named in errors). Non-iterative ones fit once and yield ``0``. Iterative ones fit the feature step
    once, then grow the estimator with ``warm_start`` to each point of
    :func:`stage_schedule`; the result after the last stage equals a direct fit with the
    same seed, and stopping after stage *k* is reproduced by fitting with
    ``max_iter`` set to the yielded count.
    """
    features, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
    _guarded(lambda: _cap_svd(features, X), family)
    if not is_iterative(model):
        _fit(pipeline, X, y, family)
        yield 0
        return
    transformed = _fit(features, X, y, family, transform=True)
    for n_iter in stage_schedule(model.max_iter):
        model.set_params(warm_start=True, max_iter=n_iter)
        model.fit(transformed, y)
        yield n_iter
    model.set_params(warm_start=False)


def _cap_svd(features: ColumnTransformer, X: pd.DataFrame) -> None:
    """Lower each text step's TruncatedSVD to its vocabulary size when that is smaller.

    A short vocabulary (a few dozen distinct words) cannot give ``svd_components``
    components; the capped value is a plain parameter of the fitted Pipeline.
    """
    for _, branch, column in features.transformers:
        if isinstance(branch, Pipeline) and "svd" in branch.named_steps:
            svd = branch.named_steps["svd"]
            size = len(clone(branch.named_steps["tfidf"]).fit(X[column]).vocabulary_)
            if size < svd.n_components:
                svd.set_params(n_components=max(2, size))


def _fit(step: Any, X: pd.DataFrame, y: np.ndarray, family: str | None, transform: bool = False) -> Any:
    """``step.fit`` (or ``fit_transform``); a learned text step that cannot fit is a TrainError."""
    return _guarded(lambda: step.fit_transform(X, y) if transform else step.fit(X, y), family)


def _guarded(call: Callable[[], Any], family: str | None) -> Any:
    """``call()``; the ValueErrors of a text step that cannot be learned become a TrainError."""
    try:
        return call()
    except ValueError as exc:
        message = str(exc)
        if any(hint in message for hint in ("vocabulary", "no terms remain", "n_components")):
            raise TrainError(
                f"family {family!r}: a text step cannot be fitted ({message}); lower train.text.min_df "
                f"(or svd_components for estimators that need dense input)") from exc
        raise


def fit_pipeline(
    schema: FeatureSchema, family: str, params: dict[str, Any], seed: int, frame: pd.DataFrame,
    config: TrainConfig | None = None,
) -> Pipeline:
    """Build and fully fit the pipeline of ``family`` on ``frame`` (deterministic in ``seed``)."""
    pipeline = build_pipeline(schema, family, params, seed, config)
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
    "MISSING_LEVEL",
    "STAGES",
    "build_estimator",
    "build_pipeline",
    "build_preprocessor",
    "text_step_name",
    "families",
    "features_and_label",
    "fit_pipeline",
    "fit_stages",
    "key_fraction",
    "label_values",
    "split_by_key",
    "stage_schedule",
]
