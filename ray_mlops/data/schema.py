"""What the feature table looks like, and where ingestion puts it.

Layout under the storage root (one folder per data fingerprint, so a table is never
overwritten by a different input)::

    features/<fingerprint>/table/*.parquet        the feature table (key, label, features)
    features/<fingerprint>/reference.parquet      a reference sample (features + label)
    features/<fingerprint>/profile.json           FeatureSchema + per-feature summaries
    features/<fingerprint>/report.json            row counts, rejects per source and reason
    features/<fingerprint>/quarantine/<source>/   rejected records with their reason
    features/latest.json                          pointer to the last complete ingest

``latest.json`` is written last and atomically: a failed or interrupted ingest leaves the
previous pointer in place, so nothing half-written ever looks valid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd

from ray_mlops.errors import DataError
from ray_mlops.storage import Storage

FeatureKind = Literal["numeric", "categorical"]

FEATURES_DIR = "features"
LATEST = f"{FEATURES_DIR}/latest.json"


@dataclass(frozen=True)
class FeatureSchema:
    """The columns of a feature table: entity key, label, and each feature's kind."""

    entity_key: str
    label: str
    task: Literal["classification", "regression"]
    features: dict[str, FeatureKind]

    @property
    def numeric(self) -> list[str]:
        return [name for name, kind in self.features.items() if kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [name for name, kind in self.features.items() if kind == "categorical"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "FeatureSchema":
        return cls(
            entity_key=raw["entity_key"],
            label=raw["label"],
            task=raw["task"],
            features=dict(raw["features"]),
        )


@dataclass(frozen=True)
class IngestResult:
    """Where an ingest put its outputs and what it counted."""

    fingerprint: str
    schema: FeatureSchema
    rows: int
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        return f"{FEATURES_DIR}/{self.fingerprint}"

    @property
    def table_dir(self) -> str:
        return f"{self.folder}/table"

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "schema": self.schema.to_dict(),
            "rows": self.rows,
            "counts": self.counts,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "IngestResult":
        return cls(raw["fingerprint"], FeatureSchema.from_dict(raw["schema"]), raw["rows"], raw.get("counts", {}))


def latest_ingest(storage: Storage) -> IngestResult:
    """The last complete ingest under ``storage``; a :class:`DataError` if there is none."""
    if not storage.exists(LATEST):
        raise DataError(f"no feature table in {storage.location}: run `ray-mlops ingest` first")
    return IngestResult.from_dict(storage.read_json(LATEST))


def read_feature_table(storage: Storage, result: IngestResult | None = None) -> pd.DataFrame:
    """Read a (whole) feature table into pandas: for training-sized tables on one node."""
    import pyarrow.dataset as pads

    result = result or latest_ingest(storage)
    dataset = pads.dataset(storage.path(result.table_dir), filesystem=storage.fs, format="parquet")
    frame = dataset.to_table().to_pandas()
    return frame.sort_values(result.schema.entity_key, kind="stable").reset_index(drop=True)


def read_reference(storage: Storage, result: IngestResult | None = None) -> pd.DataFrame:
    """The reference sample (features + label) saved by an ingest."""
    import pyarrow.parquet as pq

    result = result or latest_ingest(storage)
    return pq.read_table(storage.path(f"{result.folder}/reference.parquet"), filesystem=storage.fs).to_pandas()


__all__ = [
    "FeatureKind",
    "FeatureSchema",
    "IngestResult",
    "latest_ingest",
    "read_feature_table",
    "read_reference",
    "LATEST",
    "FEATURES_DIR",
]
