"""What the monitor compares of a model's outputs, for every task.

Prediction records (the serving log) and a model's own outputs on reference rows go
through the same :func:`output_frame`, so a reference and a window always have the same
columns, and the prediction test is a :class:`~ray_mlops.monitor.drift.DriftDetector`
over them (Bonferroni across its columns):

| outputs | columns | test |
|---|---|---|
| regression | ``prediction``: the value | KS |
| binary classification (2 probabilities) | ``prediction``: P(the last class) | KS |
| multi-class (3+ probabilities) | ``prediction``: the predicted label; ``prediction_confidence``: the largest probability | chi-squared on label counts (unseen labels count) + KS |
| a classifier without probabilities | ``prediction``: the predicted label | chi-squared |

Labels are compared as strings in the prediction test (ints and strings alike), and by
value in :func:`agreement` (accuracy = label == prediction).

>>> frame = output_frame(["setosa", "virginica"], [[0.8, 0.1, 0.1], [0.2, 0.3, 0.5]], "classification")
>>> frame.to_dict("list")
{'prediction': ['setosa', 'virginica'], 'prediction_confidence': [0.8, 0.5]}
>>> agreement(pd.Series([1, 2, "a"]), pd.Series([1, 3, "a"])).tolist()
[True, False, True]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

PREDICTION = "prediction"
CONFIDENCE = "prediction_confidence"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _labels(values: Any) -> pd.Series:
    return pd.Series([None if _missing(v) else str(v) for v in values], dtype=object)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _same(label: Any, prediction: Any) -> bool:
    if _is_number(label) and _is_number(prediction):
        return float(label) == float(prediction)
    return not _missing(label) and str(label) == str(prediction)


def _width(probabilities: Any) -> int:
    """The number of classes in the first probability list (0 when there is none)."""
    if probabilities is None:
        return 0
    for row in probabilities:
        if not _missing(row):
            return len(row)
    return 0


def _matrix(probabilities: Any, width: int) -> np.ndarray:
    """Rows × classes floats; a row that is missing or of another width is NaN."""
    rows = [row if row is not None and not isinstance(row, float) and len(row) == width else [np.nan] * width
            for row in probabilities]
    return np.asarray(rows, dtype=float).reshape(len(rows), width)


def output_frame(predictions: Any, probabilities: Any, task: str) -> pd.DataFrame:
    """The prediction-test columns of outputs (see the module table); rows stay in order."""
    if task != "classification":
        values = pd.to_numeric(pd.Series(list(predictions), dtype=object), errors="coerce")
        return pd.DataFrame({PREDICTION: values.to_numpy(dtype=float)})
    width = _width(probabilities)
    if width == 0:
        return pd.DataFrame({PREDICTION: _labels(predictions)})
    matrix = _matrix(probabilities, width)
    if width == 2:
        return pd.DataFrame({PREDICTION: matrix[:, -1]})
    confidence = np.where(np.isnan(matrix).any(axis=1), np.nan, np.nan_to_num(matrix).max(axis=1))
    return pd.DataFrame({PREDICTION: _labels(predictions), CONFIDENCE: confidence})


def record_outputs(records: pd.DataFrame, task: str) -> pd.DataFrame:
    """:func:`output_frame` of prediction records (``prediction`` and ``probabilities`` columns)."""
    probabilities = records["probabilities"] if "probabilities" in records else None
    return output_frame(records["prediction"], probabilities, task)


def model_outputs(model: Any, X: pd.DataFrame, task: str) -> pd.DataFrame:
    """:func:`output_frame` of a fitted model's outputs on ``X``, computed as serving does."""
    if task != "classification" or not hasattr(model, "predict_proba"):
        return output_frame(model.predict(X), None, task)
    proba = np.asarray(model.predict_proba(X), dtype=float)
    labels = np.asarray(model.classes_, dtype=object)[proba.argmax(axis=1)]
    return output_frame(labels, proba, task)


def agreement(labels: Any, predictions: Any) -> np.ndarray:
    """Row-wise ``label == prediction``: by value for numbers (``1 == 1.0``), else as strings."""
    return np.array([_same(a, b) for a, b in zip(labels, predictions)], dtype=bool)


def abs_errors(labels: Any, predictions: Any) -> np.ndarray:
    """``|label - prediction|`` of regression outputs (NaN where either is not a number)."""
    values = [pd.to_numeric(pd.Series(list(v), dtype=object), errors="coerce").to_numpy(dtype=float)
              for v in (labels, predictions)]
    return np.abs(values[0] - values[1])


__all__ = ["output_frame", "record_outputs", "model_outputs", "agreement", "abs_errors", "PREDICTION", "CONFIDENCE"]
