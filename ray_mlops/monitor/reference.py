"""The monitor's reference for one production version, and the test of one window.

A version's reference comes from the registry (the profile files stored with it):

- **inputs**: the ``reference.parquet`` sample (the ingest's, or the post-drift rows a
  retraining kept) → :class:`DriftDetector` over every feature;
- **predictions**: the version's own outputs on reference rows it was *not* fitted on
  (the key-hash validation split, or every row when the version says its reference is
  out-of-sample) → :class:`PredictionDriftDetector` (KS on the positive-class
  probability, or on the value for regression). In-sample outputs would be sharper than
  anything production sees and would flag drift forever;
- **accuracy**: the validation accuracy in the version's metadata →
  :class:`PerformanceDriftDetector` on the labeled rows of a window (classification).

The three share the window's level ``alpha`` (Bonferroni: ``alpha / 3`` each), so an
unchanged stream is flagged with probability at most ``alpha`` per window whatever
subset of tests has data. Prediction and accuracy tests use only the rows the reference
version predicted (a window may straddle a swap).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ray_mlops.config import MonitorConfig
from ray_mlops.data.schema import FeatureSchema, cast_features
from ray_mlops.monitor.drift import (
    DriftDetector,
    DriftReport,
    FeatureResult,
    PerformanceDriftDetector,
    PredictionDriftDetector,
)
from ray_mlops.registry import Registry
from ray_mlops.train.pipelines import split_by_key

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.parquet"
DETECTORS = ("inputs", "predictions", "accuracy")
PREDICTION_FEATURE = "prediction"
ACCURACY_FEATURE = "accuracy"
MIN_PREDICTION_ROWS = 20
MIN_REFERENCE_ROWS = 30


@dataclass(frozen=True)
class WindowTest:
    """The combined report of one window and the p-value of each detector that ran."""

    report: DriftReport
    parts: dict[str, float | None]
    labeled: int
    accuracy: float | None


def positive_scores(frame: pd.DataFrame, task: str) -> np.ndarray:
    """The score the prediction test compares: P(class 1), or the predicted value."""
    if task != "classification":
        return pd.to_numeric(frame["prediction"], errors="coerce").to_numpy(dtype=float)
    return np.array([p[-1] if p is not None and len(p) else np.nan for p in frame["probabilities"]], dtype=float)


def _usable_columns(reference: pd.DataFrame, names: list[str]) -> list[str]:
    """Features with at least one value in the reference (an all-missing one cannot be tested)."""
    return [n for n in names if reference[n].notna().any()]


class Reference:
    """Detectors built for one registry version; :meth:`test` judges a window."""

    def __init__(self, version: str, schema: FeatureSchema, features: pd.DataFrame, *,
                 scores: np.ndarray | None, accuracy: tuple[int, int] | None, config: MonitorConfig):
        self.version, self.schema, self.config = version, schema, config
        level = config.alpha / len(DETECTORS)
        self.columns = _usable_columns(features, schema.tested)  # text and vector features are not tested one by one
        categorical = [c for c in schema.categorical if c in self.columns]
        self.inputs = DriftDetector(features[self.columns], alpha=level, correction=config.correction,
                                    categorical=categorical)
        self.predictions = None
        if scores is not None and np.isfinite(scores).sum() >= MIN_REFERENCE_ROWS:
            self.predictions = PredictionDriftDetector(scores[np.isfinite(scores)], alpha=level, categorical=False)
        self.accuracy = None
        if accuracy is not None and schema.task == "classification":
            self.accuracy = PerformanceDriftDetector.from_counts(*accuracy, alpha=level)
        self.rows = len(features)
        self.prediction_rows = 0 if scores is None else int(np.isfinite(scores).sum())
        self.reference_accuracy = None if accuracy is None else accuracy[0] / accuracy[1]

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "rows": self.rows, "features": len(self.columns),
                "prediction_rows": self.prediction_rows, "accuracy": self.reference_accuracy}

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def load(cls, registry: Registry, ref: str, schema: FeatureSchema, config: MonitorConfig) -> "Reference":
        """Build the reference of ``ref`` (a version or alias) from the registry.

        The rows the version was not fitted on come from its metadata (its out-of-sample
        reference, or the split recorded at registration), never from today's config.
        """
        meta = registry.metadata(ref)
        version = meta["version"]
        raw = pd.read_parquet(io.BytesIO(registry.read_profile_file(version, REFERENCE_FILE)))
        rows = cast_features(raw, schema)
        features = rows[list(schema.features)]
        unseen = _unseen_rows(rows, meta)
        scores = None
        if len(unseen) >= MIN_REFERENCE_ROWS:
            model = registry.load(version)
            scores = _model_scores(model, unseen[list(schema.features)], schema.task)
        return cls(version, schema, features, scores=scores, accuracy=_validation_accuracy(meta), config=config)

    # -- testing ----------------------------------------------------------------------
    def test(self, window: pd.DataFrame) -> WindowTest:
        """Test a window of prediction records (features, ``model_version``, outputs, ``label``)."""
        _check_numeric(window, self.schema.numeric)
        features = cast_features(window, self.schema)[self.columns]
        reports = {"inputs": self.inputs.test(features)}
        own = window[window["model_version"].astype(str) == self.version]
        scores = positive_scores(own, self.schema.task) if len(own) else np.array([])
        scores = scores[np.isfinite(scores)]
        if self.predictions is not None and len(scores) >= MIN_PREDICTION_ROWS:
            reports["predictions"] = self.predictions.test(scores)
        labeled = own[own["label"].notna()] if "label" in own else own.iloc[:0]
        accuracy = None
        if self.accuracy is not None and len(labeled) >= self.config.min_labels:
            frame = pd.DataFrame({"label": labeled["label"].astype(int).to_numpy(),
                                  "prediction": pd.to_numeric(labeled["prediction"], errors="coerce").to_numpy()})
            reports["accuracy"] = self.accuracy.test(frame)
            accuracy = float((frame["label"] == frame["prediction"]).mean())
        return WindowTest(_combine(reports, self.config.alpha, len(window)),
                          {name: (reports[name].p_value if name in reports else None) for name in DETECTORS},
                          len(labeled), accuracy)


def _check_numeric(window: pd.DataFrame, names: list[str]) -> None:
    """ValueError naming a numeric feature whose values are not numbers (instead of NaN)."""
    for name in names:
        column = window[name]
        if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
            continue
        bad = pd.to_numeric(column, errors="coerce").isna() & column.notna()
        if bad.any():
            raise ValueError(f"column {name!r} is numeric in the reference but holds {column[bad].iloc[0]!r}")


def _combine(reports: dict[str, DriftReport], alpha: float, rows: int) -> DriftReport:
    """One report: drift if any detector drifts at alpha/3; p = Bonferroni over the three."""
    features: dict[str, FeatureResult] = dict(reports["inputs"].features)
    if "predictions" in reports:
        features[PREDICTION_FEATURE] = reports["predictions"].features["prediction"]
    if "accuracy" in reports:
        features[ACCURACY_FEATURE] = reports["accuracy"].features["accuracy"]
    p_value = min(1.0, len(DETECTORS) * min(r.p_value for r in reports.values()))
    drift = any(r.drift for r in reports.values())
    return DriftReport(drift=drift, p_value=p_value, features=features, alpha=alpha, correction="bonferroni",
                       n_tests=sum(r.n_tests for r in reports.values()), n_window=rows)


def _unseen_rows(rows: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Reference rows the version was not fitted on (none when its metadata cannot tell)."""
    extra = meta.get("extra", {})
    if extra.get("reference_out_of_sample"):
        return rows
    split = extra.get("split")
    if not isinstance(split, dict) or split.get("key") not in rows or split.get("key_hash") != "sha1":
        return rows.iloc[:0]
    return split_by_key(rows, split["key"], float(split["validation_fraction"]))[1]


def _model_scores(model: Any, X: pd.DataFrame, task: str) -> np.ndarray:
    if task == "classification":
        return np.asarray(model.predict_proba(X), dtype=float)[:, -1]
    return np.asarray(model.predict(X), dtype=float)


def _validation_accuracy(meta: dict) -> tuple[int, int] | None:
    """Correct/total on rows the version was not fitted on: its reference rows, else its validation split."""
    own = meta.get("extra", {}).get("reference_accuracy")
    if isinstance(own, dict) and own.get("total"):
        return int(own["correct"]), int(own["total"])
    accuracy = meta.get("metrics", {}).get("accuracy")
    total = meta.get("extra", {}).get("validation_rows")
    if not isinstance(accuracy, (int, float)) or not isinstance(total, int) or total <= 0:
        return None
    return int(round(accuracy * total)), total


__all__ = ["Reference", "WindowTest", "positive_scores", "DETECTORS", "REFERENCE_FILE"]
