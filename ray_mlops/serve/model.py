"""A model version ready to serve: loaded (sha256-verified), checked and warmed up.

:func:`load_version` either returns a :class:`ServedModel` that has already predicted on
a sample of reference rows, or raises :class:`ServingError`; a replica switches to a new
version only when it returns, so a bad version never serves a request.

A version predicts through :func:`ray_mlops.serve.fastpath.compile_pipeline` (the same
Pipeline with its ``ColumnTransformer`` in numpy) when that reproduces the Pipeline's own
outputs on the warm-up rows, else through the Pipeline itself.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ray_mlops.data.schema import FeatureRows, FeatureSchema, cast_features, feature_rows, read_reference
from ray_mlops.errors import DataError, RayMlopsError, ServingError
from ray_mlops.registry import Registry
from ray_mlops.serve.fastpath import FastPipeline, compile_pipeline

REFERENCE_PROFILE_FILE = "reference.parquet"
WARMUP_ROWS = 64


@dataclass(frozen=True)
class Prediction:
    """Outputs for a batch of feature rows, in row order."""

    predictions: list
    probabilities: list[list[float]] | None


@dataclass(frozen=True)
class ServedModel:
    """One registry version, immutable once built (replicas swap the whole object)."""

    version: str
    model: Any
    metadata: dict
    task: str
    classes: list = field(default_factory=list)  # the model's ``classes_`` (ints or strings); [] for regression
    fast: FastPipeline | None = None  # the same outputs as ``model``, verified at load

    def unknown_label(self, labels: list) -> int | None:
        """The index of the first of ``labels`` that is not one of ``classes`` (classification), else None."""
        if self.task != "classification":
            return None
        known = {(type(c), c) for c in self.classes}
        return next((i for i, label in enumerate(labels) if (type(label), label) not in known), None)

    def predict(self, features: pd.DataFrame | FeatureRows) -> Prediction:
        """Regression: values. Classification: the labels of ``classes`` (ints or strings, as
        the model's ``classes_``) and one probability list per row in that order; a
        classifier without ``predict_proba`` gives its ``predict`` labels and no probabilities.

        ``features``: a feature frame, or :class:`FeatureRows` (read directly by the compiled
        path; the plain Pipeline gets their frame)."""
        model = self.fast or self.model
        if self.fast is None and isinstance(features, FeatureRows):
            features = features.frame()
        if self.task != "classification":
            values = np.asarray(model.predict(features), dtype=float)
            return Prediction(values.tolist(), None)
        if not hasattr(self.model, "predict_proba"):
            return Prediction(_plain_labels(model.predict(features)), None)
        proba = np.asarray(model.predict_proba(features), dtype=float)
        labels = np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
        return Prediction(_plain_labels(labels), proba.round(6).tolist())


def _plain_labels(labels: Any) -> list:
    """Class labels as JSON-ready Python values (``int``/``str``/``bool``, never numpy scalars)."""
    return [label.item() if isinstance(label, np.generic) else label for label in np.asarray(labels, dtype=object)]


def _warmup_sample(registry: Registry, version: str, metadata: dict, schema: FeatureSchema) -> pd.DataFrame:
    """Reference rows stored with the version, else those of the latest ingest."""
    if REFERENCE_PROFILE_FILE in metadata.get("profile_files", {}):
        frame = pd.read_parquet(io.BytesIO(registry.read_profile_file(version, REFERENCE_PROFILE_FILE)))
    else:
        try:
            frame = read_reference(registry.storage)
        except (DataError, OSError) as exc:
            raise ServingError(f"{version}: no reference rows to warm up on: {exc}") from exc
    missing = [name for name in schema.features if name not in frame.columns]
    if missing:
        raise ServingError(f"{version}: warm-up rows lack features {missing[:5]}")
    return cast_features(frame.head(WARMUP_ROWS).drop(columns=[schema.label], errors="ignore"), schema)[list(schema.features)]


def _check_features(version: str, model: Any, schema: FeatureSchema) -> None:
    expected = getattr(model, "feature_names_in_", None)
    if expected is None:
        return
    unknown = sorted(set(expected) - set(schema.features))
    if unknown:
        raise ServingError(f"{version} expects features this config does not produce: {unknown[:5]}")


def _check_outputs(version: str, out: Prediction, rows: int, classes: list) -> None:
    if len(out.predictions) != rows:
        raise ServingError(f"{version}: {len(out.predictions)} predictions for {rows} warm-up rows")
    if classes and out.probabilities is None:
        unknown = [p for p in out.predictions if p not in classes]
        if unknown:
            raise ServingError(f"{version}: predicted {unknown[0]!r}, not one of its classes {classes[:10]}")
        return
    values = np.asarray(out.probabilities if out.probabilities is not None else out.predictions, dtype=float)
    if not np.isfinite(values).all():
        raise ServingError(f"{version}: non-finite outputs on the warm-up rows")


def _with_fast_path(served: ServedModel, sample: pd.DataFrame, expected: Prediction,
                    schema: FeatureSchema | None = None) -> ServedModel:
    """``served`` predicting through its compiled Pipeline, if that gives the same outputs on ``sample``
    (as a frame, and as the :class:`FeatureRows` a replica featurizes into when ``schema`` is given)."""
    fast = compile_pipeline(served.model)
    if fast is None:
        return served
    candidate = ServedModel(served.version, served.model, served.metadata, served.task, served.classes, fast)
    try:
        same = candidate.predict(sample) == expected
        if same and schema is not None:
            same = candidate.predict(feature_rows(sample, len(sample), schema)) == expected
    except Exception:  # a step the compiled path reads differently: serve the Pipeline as it is
        same = False
    return candidate if same else served


def load_version(registry: Registry, ref: str, schema: FeatureSchema) -> ServedModel:
    """Load ``ref`` (a version or alias), verify and warm it up; :class:`ServingError` if not servable."""
    try:
        metadata = registry.metadata(ref)
        version = metadata["version"]
        model = registry.load(version)  # verifies the artifact's sha256 first
        _check_features(version, model, schema)
        classes = _plain_labels(getattr(model, "classes_", [])) if schema.task == "classification" else []
        if schema.task == "classification" and not classes:
            raise ServingError(f"{version} is not a classifier (no classes_)")
        served = ServedModel(version, model, metadata, schema.task, classes)
        sample = _warmup_sample(registry, version, metadata, schema)
        expected = served.predict(sample)
        _check_outputs(version, expected, len(sample), classes)
        served = _with_fast_path(served, sample, expected, schema)
    except ServingError:
        raise
    except RayMlopsError as exc:
        raise ServingError(f"cannot serve {ref}: {exc}") from exc
    except Exception as exc:  # the model itself failed on real rows
        raise ServingError(f"cannot serve {ref}: {type(exc).__name__}: {exc}") from exc
    return served


__all__ = ["ServedModel", "Prediction", "load_version", "REFERENCE_PROFILE_FILE"]
