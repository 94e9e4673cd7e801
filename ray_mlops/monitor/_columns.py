"""Column kinds and checks: which features are numeric or categorical, their values as a
float matrix, the checks on options and windows (errors name the column or option), and
a model's outputs as a matrix."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ray_mlops.monitor import _multitest

__all__ = ["CATEGORICAL", "NUMERIC", "check_options", "check_reference", "check_window_frame",
           "holds_strings", "infer_kinds", "model_outputs", "numeric_matrix"]

NUMERIC = "numeric"
CATEGORICAL = "categorical"


def check_options(alpha: float, correction: str, combine: str | None) -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if correction not in _multitest.CORRECTIONS:
        raise ValueError(f"correction must be one of {_multitest.CORRECTIONS}, got {correction!r}")
    if combine is not None and combine not in _multitest.COMBINATIONS:
        raise ValueError(f"combine must be None or one of {_multitest.COMBINATIONS}, "
                         f"got {combine!r}")


def check_reference(reference: Any) -> dict[str, int]:
    """The missing count per column of a valid reference (ValueError otherwise)."""
    if not isinstance(reference, pd.DataFrame) or reference.shape[0] == 0 or reference.shape[1] == 0:
        raise ValueError("reference must be a non-empty pandas DataFrame")
    missing = reference.isna().sum()
    empty = [c for c in reference.columns if missing[c] == len(reference)]
    if empty:
        raise ValueError(f"reference columns with no non-missing value: {empty}")
    return {c: int(missing[c]) for c in reference.columns}


@functools.lru_cache(maxsize=256)
def _is_numeric_dtype(dtype: Any) -> bool:
    """Numeric and not bool (memoised: pandas' dtype checks cost microseconds each)."""
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _is_numeric(series: pd.Series) -> bool:
    return _is_numeric_dtype(series.dtype)


def _is_categorical_dtype(series: pd.Series) -> bool:
    dtype = series.dtype
    return (pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype))


def infer_kinds(reference: pd.DataFrame, categorical: Iterable[str] | None) -> dict[str, str]:
    """``{column: "numeric" | "categorical"}`` from dtypes or the ``categorical`` list."""
    forced = None if categorical is None else list(categorical)
    unknown = [c for c in forced or [] if c not in reference.columns]
    if unknown:
        raise ValueError(f"categorical names columns not in the reference: {unknown}")
    kinds = {}
    for name in reference.columns:
        col = reference[name]
        if (forced is not None and name in forced) or (forced is None and _is_categorical_dtype(col)):
            kinds[name] = CATEGORICAL
        elif _is_numeric(col):
            kinds[name] = NUMERIC
        else:
            hint = " (list it in categorical=)" if forced is not None else ""
            raise ValueError(f"column {name!r}: unsupported dtype {col.dtype} for drift "
                             f"tests{hint}; convert it to numeric or categorical")
    return kinds


def _numeric_column(series: pd.Series, name: str, where: str) -> np.ndarray:
    """Float values of a numeric feature; ValueError naming it if its type changed."""
    if _is_numeric(series):
        return series.to_numpy(dtype=float, na_value=np.nan)
    if series.isna().all():
        return np.full(len(series), np.nan)
    if not pd.api.types.is_bool_dtype(series.dtype) and pd.api.types.is_object_dtype(series.dtype):
        try:
            return pd.to_numeric(series, errors="raise").to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"column {name!r} changed type: numeric in the reference, "
                     f"{series.dtype} in the {where}")


def numeric_matrix(frame: pd.DataFrame, names: list[str], where: str,
                   columns: list | None = None) -> np.ndarray:
    """Rows × features float matrix (NaN = missing); ``columns``: the frame's, as a list."""
    if not names:
        return np.empty((len(frame), 0))
    columns = frame.columns.tolist() if columns is None else columns
    position = {name: i for i, name in enumerate(columns)}
    positions = [position[n] for n in names]  # by position: label lookups cost more
    first = positions[0]
    contiguous = positions == list(range(first, first + len(positions)))  # a slice: cheaper
    block = (frame.iloc[:, first:first + len(positions)] if contiguous
             else frame.take(positions, axis=1)).to_numpy()  # one block: numeric iff its kind is
    if block.dtype.kind in "fiu":  # (bool, object, strings, datetimes: column by column)
        return block.astype(float, copy=False)
    return np.column_stack([_numeric_column(frame[n], n, where) for n in names])


def holds_strings(present: list) -> bool | None:
    """Whether the non-missing values (``present``: e.g. the distinct ones) are strings
    (None when there are none)."""
    return isinstance(present[0], str) if present else None


def check_window_frame(window: Any, columns: list[str]) -> list:
    """The window's column names (a list); ValueError naming missing or extra ones."""
    if not isinstance(window, pd.DataFrame):
        raise ValueError(f"window must be a pandas DataFrame, got {type(window).__name__}")
    if len(window) == 0:
        raise ValueError("window is empty: at least one row is needed")
    names = window.columns.tolist()
    if names == columns:
        return names
    have, want = set(names), set(columns)
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"window is missing reference columns: {missing}")
    extra = [c for c in names if c not in want]
    if extra:
        raise ValueError(f"window has columns not in the reference: {extra}")
    return names


def model_outputs(model: Any, frame: pd.DataFrame, where: str) -> tuple[np.ndarray, list[str]]:
    """The model's outputs on ``frame`` as rows × outputs, with their names.

    ``predict_proba`` when the model has it (one column fewer than the classes for two
    classes: the other is its complement), else ``predict`` (a regression's value).
    """
    try:
        if hasattr(model, "predict_proba"):
            values = np.asarray(model.predict_proba(frame), dtype=float)
            classes = list(getattr(model, "classes_", range(values.shape[1])))
            names = [f"proba[{c}]" for c in classes]
            if values.shape[1] == 2:
                values, names = values[:, 1:], names[1:]
        else:
            values = np.asarray(model.predict(frame), dtype=float).reshape(len(frame), -1)
            names = ["prediction"] if values.shape[1] == 1 else [
                f"prediction[{i}]" for i in range(values.shape[1])]
    except Exception as exc:  # a model's own errors: say which input it failed on
        raise ValueError(f"model could not score the {where}: {exc}") from exc
    return values, names
