"""A faster call path for a registered Pipeline's ``ColumnTransformer``, without pandas indexing.

The registered artifact stays the plain scikit-learn Pipeline. For a few rows, most of its
``predict_proba`` is per-call overhead of the ``ColumnTransformer`` over a DataFrame
(column selection, input validation, warnings bookkeeping), not arithmetic. This module
reads the fitted state of the common branch steps (``SimpleImputer``, ``StandardScaler``,
``OneHotEncoder``) and applies the same arithmetic to numpy blocks; any other branch (a
TF-IDF step, a user's transformer) gets exactly the input the ``ColumnTransformer`` would
give it. Everything after the ``ColumnTransformer`` runs unchanged.

:func:`compile_pipeline` returns ``None`` for a Pipeline it does not cover. A
:class:`FastPipeline` is only used after it reproduced the Pipeline's own outputs on the
version's warm-up rows (:mod:`ray_mlops.serve.model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ray_mlops.data.schema import FeatureRows

Step = Callable[[np.ndarray], np.ndarray]


def _missing(X: np.ndarray, value: Any) -> np.ndarray:
    """sklearn's missing-value mask: NaN (also in object arrays) or equality with ``value``."""
    if value is None or isinstance(value, str) or not np.isnan(value):
        return np.asarray(X == value, dtype=bool) if X.dtype == object else X == value
    return X != X if X.dtype == object else np.isnan(X)


def _imputer(step: SimpleImputer) -> Step | None:
    stats = step.statistics_
    if not step.keep_empty_features and stats.dtype != object and np.isnan(stats).any():
        return None  # columns dropped at transform time: leave it to sklearn
    indicator = getattr(step, "indicator_", None)
    if indicator is not None and (indicator.features != "missing-only" or indicator.sparse is True):
        return None
    fill = stats.astype(step._fill_dtype, copy=False) if hasattr(step, "_fill_dtype") else stats

    def impute(X: np.ndarray) -> np.ndarray:
        mask = _missing(X, step.missing_values)
        out = np.where(mask, fill, X) if mask.any() else X
        if indicator is None:
            return out
        return np.hstack((out, mask[:, indicator.features_]))

    return impute


def _scaler(step: StandardScaler) -> Step | None:
    mean, scale = step.mean_ if step.with_mean else None, step.scale_ if step.with_std else None

    def standardize(X: np.ndarray) -> np.ndarray:
        X = np.array(X, dtype=np.float64)
        if mean is not None:
            X -= mean
        if scale is not None:
            X /= scale
        return X

    return standardize


def _onehot(step: OneHotEncoder) -> Step | None:
    if step.handle_unknown != "ignore" or step.drop is not None or getattr(step, "_infrequent_enabled", False):
        return None
    lookups = [{value: i for i, value in enumerate(cats)} for cats in step.categories_]
    offsets = np.cumsum([0] + [len(cats) for cats in step.categories_])

    def encode(X: np.ndarray) -> Any:
        out = np.zeros((X.shape[0], offsets[-1]), dtype=step.dtype)
        for j, lookup in enumerate(lookups):
            for i, value in enumerate(X[:, j]):
                k = lookup.get(value)
                if k is not None:
                    out[i, offsets[j] + k] = 1
        return sparse.csr_matrix(out) if step.sparse_output else out

    return encode


_STEPS: dict[type, Callable[[Any], Step | None]] = {
    SimpleImputer: _imputer, StandardScaler: _scaler, OneHotEncoder: _onehot,
}


def _chain(transformer: Any) -> Step | None:
    """One numpy function for a branch made of known steps, else None."""
    steps = [s for _, s in transformer.steps] if isinstance(transformer, Pipeline) else [transformer]
    compiled = [_STEPS[type(s)](s) if type(s) in _STEPS else None for s in steps]
    if not compiled or any(c is None for c in compiled):
        return None

    def run(X: np.ndarray) -> np.ndarray:
        for step in compiled:
            X = step(X)
        return X

    return run


@dataclass(frozen=True)
class _Branch:
    columns: Any          # as fitted: a column name (1-D input) or a list of names
    transformer: Any      # the fitted branch (used when ``compiled`` is None)
    compiled: Step | None

    def apply(self, features: pd.DataFrame | FeatureRows) -> Any:
        if isinstance(features, FeatureRows):
            if self.compiled is not None:
                return self.compiled(features.block(self.columns))
            return self.transformer.transform(_selected(features, self.columns))
        if self.compiled is None:
            return self.transformer.transform(features[self.columns])
        return self.compiled(_block(features, self.columns))


def _selected(rows: FeatureRows, columns: Any) -> Any:
    """``rows.frame()[columns]`` for a branch sklearn runs itself: a Series (one name) or a frame."""
    if isinstance(columns, str):
        return pd.Series(rows.column(columns), name=columns)
    return pd.DataFrame({name: rows.column(name) for name in columns})


def _block(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """``frame[columns].to_numpy()`` without building a frame: float64, else object."""
    positions = frame.columns.get_indexer(columns)
    if (positions < 0).any():
        raise KeyError(f"columns are missing: {[c for c, p in zip(columns, positions) if p < 0][:5]}")
    if all(dtype == np.float64 for dtype in frame.dtypes.to_numpy()[positions]):
        return frame.iloc[:, positions].to_numpy()
    return np.column_stack([frame.iloc[:, p].to_numpy(dtype=object) for p in positions])


@dataclass(frozen=True)
class FastPipeline:
    """The same outputs as ``pipeline`` for a feature frame (or :class:`FeatureRows`), with the first step in numpy."""

    pipeline: Pipeline
    branches: tuple[_Branch, ...]
    sparse_output: bool

    def _features(self, frame: pd.DataFrame | FeatureRows) -> Any:
        blocks = [branch.apply(frame) for branch in self.branches]
        if self.sparse_output:
            return sparse.hstack([b if sparse.issparse(b) else np.asarray(b, dtype=float) for b in blocks]).tocsr()
        return np.hstack([b.toarray() if sparse.issparse(b) else b for b in blocks])

    def _final_input(self, frame: pd.DataFrame | FeatureRows) -> Any:
        X = self._features(frame)
        for _, step in self.pipeline.steps[1:-1]:
            if step is not None and step != "passthrough":
                X = step.transform(X)
        return X

    def predict_proba(self, frame: pd.DataFrame | FeatureRows) -> np.ndarray:
        return self.pipeline.steps[-1][1].predict_proba(self._final_input(frame))

    def predict(self, frame: pd.DataFrame | FeatureRows) -> np.ndarray:
        return self.pipeline.steps[-1][1].predict(self._final_input(frame))


def _columns_ok(columns: Any) -> bool:
    if isinstance(columns, str):
        return True
    return isinstance(columns, (list, tuple, np.ndarray)) and all(isinstance(c, str) for c in columns)


def compile_pipeline(model: Any) -> FastPipeline | None:
    """A :class:`FastPipeline` for ``Pipeline([ColumnTransformer, ..., estimator])``, else None."""
    if not isinstance(model, Pipeline) or len(model.steps) < 2:
        return None
    features = model.steps[0][1]
    if not isinstance(features, ColumnTransformer) or features.transformer_weights or features._remainder[1] != "drop":
        return None
    if getattr(features, "_sklearn_output_config", {}).get("transform") not in (None, "default"):
        return None
    branches = []
    for name, transformer, columns in features.transformers_:
        if transformer == "drop" or (not isinstance(columns, str) and len(columns) == 0):
            continue
        if transformer == "passthrough" or not _columns_ok(columns):
            return None
        compiled = None if isinstance(columns, str) else _chain(transformer)
        branches.append(_Branch(columns if isinstance(columns, str) else list(columns), transformer, compiled))
    return FastPipeline(model, tuple(branches), bool(features.sparse_output_))


__all__ = ["FastPipeline", "compile_pipeline"]
