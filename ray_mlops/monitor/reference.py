"""The monitor's reference for one production version, and the test of one window.

A version's reference comes from the registry (the profile files stored with it):

- **inputs**: the ``reference.parquet`` sample (the ingest's, or the post-drift rows a
  retraining kept) → :class:`DriftDetector` over the features the schema tests
  (``schema.tested``: numeric and categorical; raw text and vector components are not
  tested one by one);
- **predictions**: the version's own outputs on reference rows it was *not* fitted on
  (the key-hash validation split, or every row when the version says its reference is
  out-of-sample) → a :class:`DriftDetector` over :mod:`ray_mlops.monitor.outputs`'
  columns: KS on P(last class) for binary classification, chi-squared on the predicted
  labels plus KS on the largest probability for multi-class, KS on the value for
  regression. In-sample outputs would be sharper than anything production sees and would
  flag drift forever;
- **accuracy**: classification: the validation accuracy in the version's metadata →
  :class:`PerformanceDriftDetector` on the labeled rows of a window (correct = label ==
  prediction, any number of classes); regression: the version's absolute errors on the
  same unseen reference rows → :class:`ErrorDriftDetector` (one-sided Mann–Whitney: are
  the window's errors larger?). Probation uses this detector's p-value for both tasks.

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
    ErrorDriftDetector,
    FeatureResult,
    PerformanceDriftDetector,
)
from ray_mlops.monitor.outputs import PREDICTION, abs_errors, agreement, model_outputs, record_outputs
from ray_mlops.registry import Registry
from ray_mlops.train.pipelines import split_by_key

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.parquet"
DETECTORS = ("inputs", "predictions", "accuracy")
MIN_PREDICTION_ROWS = 20
MIN_REFERENCE_ROWS = 30


@dataclass(frozen=True)
class WindowTest:
    """The combined report of one window and the p-value of each detector that ran."""

    report: DriftReport
    parts: dict[str, float | None]
    labeled: int
    accuracy: float | None
    error: float | None = None  # regression: the labeled rows' mean absolute error


def _usable_columns(reference: pd.DataFrame, names: list[str]) -> list[str]:
    """Features with at least one value in the reference (an all-missing one cannot be tested)."""
    return [n for n in names if reference[n].notna().any()]


class Reference:
    """Detectors built for one registry version; :meth:`test` judges a window."""

    def __init__(self, version: str, schema: FeatureSchema, features: pd.DataFrame, *,
                 outputs: pd.DataFrame | None, accuracy: tuple[int, int] | None,
                 errors: np.ndarray | None = None, config: MonitorConfig):
        self.version, self.schema, self.config = version, schema, config
        level = config.alpha / len(DETECTORS)
        self.columns = _usable_columns(features, schema.tested)  # text and vector features are not tested one by one
        categorical = [c for c in schema.categorical if c in self.columns]
        self.inputs = DriftDetector(features[self.columns], alpha=level, correction=config.correction,
                                    categorical=categorical)
        outputs = None if outputs is None else outputs.dropna().reset_index(drop=True)
        self.prediction_rows = 0 if outputs is None else len(outputs)
        self.predictions = None
        if self.prediction_rows >= MIN_REFERENCE_ROWS:
            self.predictions = DriftDetector(outputs, alpha=level, correction="bonferroni", multivariate=False)
        self.accuracy = _accuracy_detector(schema.task, accuracy, errors, level)
        self.rows = len(features)
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
        unseen = _unseen_rows(rows, meta)
        outputs = errors = None
        if len(unseen) >= MIN_REFERENCE_ROWS:
            outputs = model_outputs(registry.load(version), unseen[list(schema.features)], schema.task)
            if schema.task != "classification" and schema.label in unseen:
                errors = abs_errors(unseen[schema.label], outputs[PREDICTION])
        return cls(version, schema, rows[list(schema.features)], outputs=outputs,
                   accuracy=_validation_accuracy(meta), errors=errors, config=config)

    # -- testing ----------------------------------------------------------------------
    def test(self, window: pd.DataFrame) -> WindowTest:
        """Test a window of prediction records (features, ``model_version``, outputs, ``label``)."""
        _check_numeric(window, self.schema.numeric)
        features = cast_features(window.drop(columns=[self.schema.label], errors="ignore"), self.schema)[self.columns]
        reports = {"inputs": self.inputs.test(features)}
        own = window[window["model_version"].astype(str) == self.version]
        outputs = record_outputs(own, self.schema.task).dropna()
        if (self.predictions is not None and len(outputs) >= MIN_PREDICTION_ROWS
                and list(outputs.columns) == self.predictions.columns_):
            reports["predictions"] = self.predictions.test(outputs.reset_index(drop=True))
        labeled = own[own["label"].notna()] if "label" in own else own.iloc[:0]
        score = None
        if self.accuracy is not None and len(labeled) >= self.config.min_labels:
            reports["accuracy"], score = self._test_labels(labeled)
        accuracy, error = (score, None) if self.schema.task == "classification" else (None, score)
        return WindowTest(_combine(reports, self.config.alpha, len(window)),
                          {name: (reports[name].p_value if name in reports else None) for name in DETECTORS},
                          len(labeled), accuracy, error)

    def _test_labels(self, labeled: pd.DataFrame) -> tuple[DriftReport, float]:
        """The accuracy test (classification: label == prediction) or the error test (regression)."""
        if self.schema.task == "classification":
            hits = agreement(labeled["label"], labeled["prediction"])
            return self.accuracy.test_counts(int(hits.sum()), len(hits)), float(hits.mean())
        errors = abs_errors(labeled["label"], labeled["prediction"])
        return self.accuracy.test(errors), float(np.nanmean(errors))


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
    for name in ("predictions", "accuracy"):  # prediction[, prediction_confidence]; accuracy or error
        if name in reports:
            features.update(reports[name].features)
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


def _accuracy_detector(task: str, accuracy: tuple[int, int] | None, errors: np.ndarray | None,
                       level: float) -> PerformanceDriftDetector | ErrorDriftDetector | None:
    """Classification: Fisher on the version's correct/total; regression: Mann–Whitney on its errors."""
    if task == "classification":
        return None if accuracy is None else PerformanceDriftDetector.from_counts(*accuracy, alpha=level)
    if errors is None or np.isfinite(errors).sum() < MIN_REFERENCE_ROWS:
        return None
    return ErrorDriftDetector(errors, alpha=level)


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


validation_accuracy = _validation_accuracy  # the accuracy a canary is tested against (monitor/shadow.py)

__all__ = ["Reference", "WindowTest", "DETECTORS", "REFERENCE_FILE", "validation_accuracy"]
