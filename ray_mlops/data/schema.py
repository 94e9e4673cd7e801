"""What the feature table looks like, and where ingestion puts it.

Layout under the storage root (one folder per data fingerprint, so a table is never
overwritten by a different input)::

    features/<fingerprint>/<run>/table/*.parquet        the feature table (key, label, features)
    features/<fingerprint>/<run>/reference.parquet      a reference sample (features + label)
    features/<fingerprint>/<run>/profile.json           FeatureSchema + per-feature summaries
    features/<fingerprint>/<run>/report.json            row counts, rejects per source and reason
    features/<fingerprint>/<run>/quarantine/<source>/   rejected records with their reason
    features/latest.json                                pointer to the last complete ingest

Every ingest builds in a fresh run folder and moves ``latest.json`` only after the run is
complete and verified; a run folder is never rewritten or deleted by a later ingest.

``latest.json`` is written last and atomically: a failed or interrupted ingest leaves the
previous pointer in place, so nothing half-written ever looks valid.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ray_mlops.config import Config
from ray_mlops.data.sources import FeatureKind, sources_of
from ray_mlops.errors import DataError
from ray_mlops.storage import Storage

KINDS: tuple[str, ...] = ("numeric", "categorical", "text", "vector")

FEATURES_DIR = "features"
LATEST = f"{FEATURES_DIR}/latest.json"


@dataclass(frozen=True)
class FeatureSchema:
    """The columns of a feature table: entity key, label, and each feature's kind."""

    entity_key: str
    label: str
    task: Literal["classification", "regression"]
    features: dict[str, FeatureKind]
    label_kind: Literal["int", "str", "float"] = "int"  # classification labels: int or str levels

    @property
    def numeric(self) -> list[str]:
        return [name for name, kind in self.features.items() if kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [name for name, kind in self.features.items() if kind == "categorical"]

    @property
    def text(self) -> list[str]:
        """Raw-text columns: learned inside the Pipeline, not drift-tested themselves."""
        return [name for name, kind in self.features.items() if kind == "text"]

    @property
    def vector(self) -> list[str]:
        """Components of fixed-length representations: numeric to a model, not drift-tested one by one."""
        return [name for name, kind in self.features.items() if kind == "vector"]

    @property
    def tested(self) -> list[str]:
        """The features the drift monitor tests one by one (numeric and categorical)."""
        return [name for name, kind in self.features.items() if kind in ("numeric", "categorical")]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "FeatureSchema":
        return cls(
            entity_key=raw["entity_key"],
            label=raw["label"],
            task=raw["task"],
            features=dict(raw["features"]),
            label_kind=raw.get("label_kind", "float" if raw["task"] == "regression" else "int"),
        )


@dataclass(frozen=True)
class IngestResult:
    """Where an ingest put its outputs and what it counted."""

    fingerprint: str
    schema: FeatureSchema
    rows: int
    counts: dict[str, Any] = field(default_factory=dict)
    run: str = ""  # the run folder below the fingerprint ("" for stores written before runs)

    @property
    def folder(self) -> str:
        return f"{FEATURES_DIR}/{self.fingerprint}/{self.run}" if self.run else f"{FEATURES_DIR}/{self.fingerprint}"

    @property
    def table_dir(self) -> str:
        return f"{self.folder}/table"

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "schema": self.schema.to_dict(),
            "rows": self.rows,
            "counts": self.counts,
            "run": self.run,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "IngestResult":
        return cls(raw["fingerprint"], FeatureSchema.from_dict(raw["schema"]), raw["rows"], raw.get("counts", {}),
                   raw.get("run", ""))


def feature_schema(config: Config) -> FeatureSchema:
    """The feature table's schema, known from the configuration alone."""
    features: dict[str, FeatureKind] = {}
    for source in sources_of(config):
        for name, kind in source.features().items():
            if name in features or name == config.data.entity_key:
                raise DataError(f"source {source.name!r}: column {name!r} is also produced by another source")
            features[name] = kind
    label_kind = "float" if config.data.task == "regression" else "str" if config.data.label_spec.type == "category" else "int"
    return FeatureSchema(config.data.entity_key, config.data.label, config.data.task, features, label_kind)


def cast_features(frame: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """Exactly the schema's columns, in order: numeric as float64, categorical as str/None."""
    return cast_columns(frame.reset_index(drop=True), len(frame), schema)


def cast_columns(columns: Mapping[str, Any], rows: int, schema: FeatureSchema) -> pd.DataFrame:
    """:func:`cast_features` of columns by name (arrays or default-indexed Series of ``rows`` values; absent ones missing).

    Numeric and vector features are filled into one float64 block (a frame of hundreds of
    pixel or HOG columns is built in one step, not column by column).
    """
    return feature_rows(columns, rows, schema).frame()


def feature_rows(columns: Mapping[str, Any], rows: int, schema: FeatureSchema) -> "FeatureRows":
    """:func:`cast_columns`' rows without building the frame (what the serving path predicts from)."""
    numbers, others = _layout(schema)
    block = np.full((rows, len(numbers)), np.nan)
    for j, name in enumerate(numbers):
        if name in columns:
            block[:, j] = _numeric(columns[name])
    objects = {}
    for _, name in others:
        column = columns[name] if name in columns else np.full(rows, None, dtype=object)
        objects[name] = _as_framed(_CASTS[schema.features[name]](column))
    keys = {}
    if schema.entity_key in columns:
        keys[schema.entity_key] = pd.Series(columns[schema.entity_key]).astype(object).to_numpy()
    if schema.label in columns:
        keys[schema.label] = _label_values(pd.Series(columns[schema.label]), schema.label_kind).to_numpy()
    return FeatureRows(schema, block, objects, keys)


#: pandas >= 3 stores a column of strings as ``str``, where a missing value reads back as NaN.
_STR_COLUMNS = pd.Series(np.array(["a", None], dtype=object)).dtype != object


def _as_framed(values: np.ndarray) -> np.ndarray:
    """Cast values (str or None) as a frame's column gives them back: with a string among them, None is NaN."""
    if not _STR_COLUMNS or not len(values):
        return values
    missing = np.equal(values, None)
    if missing.all() or not missing.any():
        return values
    out = values.copy()
    out[missing] = np.nan
    return out


@dataclass(frozen=True)
class FeatureRows:
    """Feature rows without a DataFrame: the float features in one block, the others as object arrays.

    The serving path featurizes into this and the compiled model reads it directly;
    :meth:`frame` is the same rows as :func:`cast_columns` gives them, built only when
    needed (the prediction log's flush thread, a model without a compiled path).
    """

    schema: FeatureSchema
    numbers: np.ndarray               # rows × the numeric and vector features, in schema order
    objects: dict[str, np.ndarray]    # categorical and text columns, as :meth:`frame`'s columns hold them
    keys: dict[str, np.ndarray] = field(default_factory=dict)  # the entity key and the label, when given

    def __len__(self) -> int:
        return self.numbers.shape[0]

    def column(self, name: str) -> np.ndarray:
        """One feature's values (float64, or objects)."""
        if name in self.objects:
            return self.objects[name]
        return self.numbers[:, _positions(self.schema)[name]]

    def block(self, names: list[str]) -> np.ndarray:
        """``frame()[names].to_numpy()``: float64 when every one is a float feature, else objects."""
        positions = _positions(self.schema)
        if all(name in positions for name in names):
            return self.numbers[:, [positions[name] for name in names]]
        return np.column_stack([self.column(name).astype(object) for name in names])

    def take(self, rows: Any) -> "FeatureRows":
        """The rows at ``rows`` (positions or a slice)."""
        return FeatureRows(self.schema, self.numbers[rows], {k: v[rows] for k, v in self.objects.items()},
                           {k: v[rows] for k, v in self.keys.items()})

    @staticmethod
    def concat(parts: list["FeatureRows"]) -> "FeatureRows":
        """The rows of ``parts`` one after another (one schema)."""
        first = parts[0]
        join = lambda values: np.concatenate(values) if len(values) > 1 else values[0]  # noqa: E731
        return FeatureRows(first.schema, np.concatenate([p.numbers for p in parts]) if len(parts) > 1 else first.numbers,
                           {k: join([p.objects[k] for p in parts]) for k in first.objects},
                           {k: join([p.keys[k] for p in parts]) for k in first.keys})

    def frame(self) -> pd.DataFrame:
        """The feature-table frame: entity key and label (when given), then the features in schema order."""
        numbers, others = _layout(self.schema)
        rows = len(self)
        frame = pd.DataFrame(self.numbers, columns=numbers, index=pd.RangeIndex(rows), copy=False)
        position = 0
        for name in (self.schema.entity_key, self.schema.label):
            if name in self.keys:
                frame.insert(position, name, self.keys[name])
                position += 1
        for where, name in others:  # categorical and text columns, at their place in the schema's order
            frame.insert(position + where, name, self.objects[name])
        return frame


@functools.lru_cache(maxsize=32)
def _layout_of(features: tuple[tuple[str, str], ...]) -> tuple[list[str], list[tuple[int, str]]]:
    numbers = [name for name, kind in features if kind in ("numeric", "vector")]
    others = [(i, name) for i, (name, kind) in enumerate(features) if kind not in ("numeric", "vector")]
    return numbers, others


def _layout(schema: FeatureSchema) -> tuple[list[str], list[tuple[int, str]]]:
    """The float features (one block) and the others with their positions among all features."""
    return _layout_of(tuple(schema.features.items()))


@functools.lru_cache(maxsize=32)
def _positions_of(features: tuple[tuple[str, str], ...]) -> dict[str, int]:
    return {name: j for j, name in enumerate(_layout_of(features)[0])}


def _positions(schema: FeatureSchema) -> dict[str, int]:
    """Each float feature's column in :attr:`FeatureRows.numbers`."""
    return _positions_of(tuple(schema.features.items()))


def _numeric(column: Any) -> np.ndarray:
    if getattr(column, "dtype", None) == np.float64:
        return np.asarray(column)
    return np.asarray(pd.to_numeric(column, errors="coerce"), dtype=np.float64)


def _categorical(column: Any) -> np.ndarray:
    values = np.asarray(column, dtype=object).reshape(-1)
    missing = pd.isna(values)
    out = np.empty(len(values), dtype=object)
    out[:] = [None if m else v if isinstance(v, str) else str(v) for v, m in zip(values, missing)]
    return out


def _text(column: Any) -> np.ndarray:
    values = np.asarray(column, dtype=object).reshape(-1)
    missing = pd.isna(values)
    out = np.empty(len(values), dtype=object)
    out[:] = ["" if m else v if isinstance(v, str) else str(v) for v, m in zip(values, missing)]
    return out


_CASTS = {"categorical": _categorical, "text": _text}


def _label_values(column: pd.Series, kind: str) -> pd.Series:
    if kind == "str":
        return pd.Series(_categorical(column), dtype=object)
    numeric = pd.to_numeric(column, errors="coerce").astype("float64")
    return numeric.astype("int64") if kind == "int" else numeric


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
    "feature_schema",
    "cast_features",
    "cast_columns",
    "feature_rows",
    "FeatureRows",
    "FeatureKind",
    "FeatureSchema",
    "IngestResult",
    "latest_ingest",
    "read_feature_table",
    "read_reference",
    "LATEST",
    "FEATURES_DIR",
]
