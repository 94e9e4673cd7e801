"""The composition root of the batch stages: feature table → Tune search → registry → gate.

The stages never import each other backwards; this module (and the CLI above it) wires
them together, so the same calls serve ``ray-mlops train``, driver scripts and the
monitor's retraining task.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ray_mlops import tracking
from ray_mlops.config import Config
from ray_mlops.data.ingest import profile_of
from ray_mlops.data.schema import FeatureSchema, IngestResult, latest_ingest, read_feature_table
from ray_mlops.promotion import GateDecision, gate_and_promote
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage
from ray_mlops.train.search import SearchResult, run_search

PROFILE_FILES = ("profile.json", "reference.parquet")


@dataclass(frozen=True)
class TrainOutcome:
    """What one train → register → gate pass produced."""

    version: str
    search: SearchResult
    decision: GateDecision
    ingest: IngestResult

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "family": self.search.family,
            "params": self.search.params,
            "metrics": self.search.metrics,
            "trials": len(self.search.trials),
            "promoted": self.decision.promoted,
            "reason": self.decision.reason,
            "gate_test": self.decision.test.to_json() if self.decision.test else None,
            "fingerprint": self.ingest.fingerprint,
        }


def profile_files(storage: Storage, ingest: IngestResult) -> dict[str, bytes]:
    """The reference profile of an ingest, as files to keep with a model version."""
    return {name: storage.read_bytes(f"{ingest.folder}/{name}") for name in PROFILE_FILES}


def split_record(config: Config, search: SearchResult, schema: FeatureSchema) -> dict[str, Any]:
    """How the search split its table, as recorded with the version (the monitor reads it back).

    A row was validation when ``key_fraction(row[key]) < validation_fraction``
    (:func:`ray_mlops.train.pipelines.key_fraction`, sha1 of the key as text).
    """
    return {"validation_fraction": config.train.validation_fraction, "key": schema.entity_key,
            "key_hash": "sha1", "train_rows": search.train_rows, "validation_rows": len(search.validation)}


def reference_of(storage: Storage, ingest: IngestResult, model: Any,
                 holdout: pd.DataFrame | None) -> tuple[dict[str, bytes], dict[str, Any]]:
    """A version's reference profile (files, metadata): the ``holdout`` when given, else the ingest's.

    A holdout the model was not fitted on is out of sample: the monitor uses all of it
    (and the model's accuracy on it) as its baseline.
    """
    if holdout is None:
        return profile_files(storage, ingest), {"reference": f"ingest {ingest.fingerprint[:12]}"}
    schema = ingest.schema
    profile = {"schema": schema.to_dict(), "fingerprint": ingest.fingerprint, "rows": len(holdout),
               "source": "holdout", "features": profile_of(holdout, schema)}
    buffer = io.BytesIO()
    holdout.to_parquet(buffer, index=False)
    files = {"reference.parquet": buffer.getvalue(), "profile.json": json.dumps(profile, default=str).encode()}
    extra: dict[str, Any] = {"reference": f"holdout ({len(holdout)} rows)", "reference_out_of_sample": True}
    if schema.task == "classification":
        correct = int((model.predict(holdout[list(schema.features)]) == holdout[schema.label].to_numpy()).sum())
        extra["reference_accuracy"] = {"correct": correct, "total": len(holdout)}
    return files, extra


def register_search(config: Config, storage: Storage, search: SearchResult, ingest: IngestResult, *,
                    holdout: pd.DataFrame | None = None, lineage: dict[str, Any] | None = None) -> str:
    """Register the search's best Pipeline with its full lineage; returns the version.

    The one registration path (``ray-mlops train`` and the monitor's retraining):
    ``holdout`` (rows the search never saw) becomes the version's reference, and
    ``lineage`` adds fields (e.g. the retraining job) to the metadata's ``extra``.
    """
    registry = Registry(storage, config.model_name)
    files, reference = reference_of(storage, ingest, search.model, holdout)
    return registry.register(
        search.model,
        params={"family": search.family, **search.params},
        metrics=search.metrics,
        data_fingerprint=ingest.fingerprint,
        config_hash=config.digest(),
        profile_files=files,
        parent=registry.get_alias("production"),
        trusted_types=search.trusted_types,
        extra={
            "trials": len(search.trials),
            "train_rows": search.train_rows,
            "validation_rows": len(search.validation),
            "split": split_record(config, search, ingest.schema),
            "experiment": search.experiment_path,
            "seed": search.seed,
            "schema": ingest.schema.to_dict(),
            **reference,
            **(lineage or {}),
        },
    )


def train_and_promote(
    config: Config,
    storage: Storage,
    *,
    holdout: pd.DataFrame | None = None,
    name: str | None = None,
    resume: bool = True,
) -> TrainOutcome:
    """Search on the latest feature table, register the best model, and gate it.

    ``holdout`` is the labeled data the candidate and production are compared on (default:
    the search's validation split, stable by entity-key hash).
    """
    ingest = latest_ingest(storage)
    frame = read_feature_table(storage, ingest)
    search = run_search(frame, ingest.schema, config.train, storage, name=name, resume=resume,
                        callbacks=tracking.tune_callbacks(config))
    version = register_search(config, storage, search, ingest)
    registry = Registry(storage, config.model_name)
    decision = gate_and_promote(registry, version, search.validation if holdout is None else holdout, ingest.schema, config.gate)
    tracking.log_registration(config, registry.metadata(version), promoted=decision.promoted, reason=decision.reason,
                              search_name=search.name)
    return TrainOutcome(version, search, decision, ingest)


__all__ = ["TrainOutcome", "train_and_promote", "register_search", "profile_files", "reference_of", "split_record"]
