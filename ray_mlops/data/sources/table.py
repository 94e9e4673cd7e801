"""Tables (``csv``, ``parquet``): one row per entity, typed, range- and level-checked columns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from pydantic import Field

from ray_mlops.config import ColumnSpec, SourceSettings
from ray_mlops.data.quarantine import reject_frame
from ray_mlops.data.sources._read import check_columns, csv_header, parquet_columns, read_parquet_files
from ray_mlops.data.sources._request import FiniteFloat, Int64
from ray_mlops.data.sources.base import Columns, FeatureKind, RecordError, SourceType, Split, empty_rejects, field_path, key_text

if TYPE_CHECKING:
    import ray.data  # imported where a Dataset is built: reading a config needs no Ray Data


class TableSettings(SourceSettings):
    """One row per entity: CSV or Parquet, with a check per declared column."""

    format: Literal["csv", "parquet"]
    columns: dict[str, ColumnSpec]

    def column_spec(self, column: str) -> ColumnSpec | None:
        return self.columns.get(column)


# -- checks -------------------------------------------------------------------------
def _blank(values: np.ndarray) -> np.ndarray:
    """Missing: NA, or text that is empty once stripped."""
    return pd.isna(values) | np.array([str(v).strip() == "" for v in values], dtype=bool).reshape(len(values))


def _check_number(values: np.ndarray, missing: np.ndarray, name: str, spec: ColumnSpec, reason: np.ndarray) -> np.ndarray:
    coerced = pd.to_numeric(np.where(missing, np.nan, values), errors="coerce").astype("float64")
    reason[~missing & np.isnan(coerced)] = f"{name}: not a number"
    reason[np.isinf(coerced)] = f"{name}: not finite"
    with np.errstate(invalid="ignore"):
        if spec.type == "int":
            reason[~np.isnan(coerced) & (coerced % 1 != 0)] = f"{name}: not an integer"
        if spec.min is not None:
            reason[coerced < spec.min] = f"{name}: below minimum {spec.min:g}"
        if spec.max is not None:
            reason[coerced > spec.max] = f"{name}: above maximum {spec.max:g}"
    return coerced


def _check_text(values: np.ndarray, missing: np.ndarray, name: str, spec: ColumnSpec, reason: np.ndarray) -> np.ndarray:
    texts = [None if m else v if isinstance(v, str) else str(v) for v, m in zip(values, missing)]
    if spec.type == "bool":
        texts = [None if v is None else v.strip().lower() for v in texts]
        reason[[v is not None and v not in ("true", "false", "1", "0") for v in texts]] = f"{name}: not a boolean"
    if spec.levels is not None:
        reason[[v is not None and v not in spec.levels for v in texts]] = f"{name}: unknown level"
    return np.array(texts, dtype=object).reshape(len(texts))


def check_column(values: np.ndarray, name: str, spec: ColumnSpec) -> tuple[np.ndarray, np.ndarray]:
    """Coerce one column to its declared type: (float64 or str/None values, reason or None per value)."""
    values = np.asarray(values)
    missing = _blank(values)
    reason = np.full(len(values), None, dtype=object)
    check = _check_number if spec.type in ("float", "int") else _check_text
    coerced = check(values, missing, name, spec, reason)
    if spec.required:
        reason[missing] = f"{name}: missing"
    return coerced, reason


def check_table(columns: dict[str, np.ndarray], specs: dict[str, ColumnSpec]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every declared column coerced, and per row the reason of its first bad column (None if good)."""
    rows = len(next(iter(columns.values()))) if columns else 0
    coerced, reasons = {}, np.full(rows, None, dtype=object)
    for name, spec in specs.items():
        coerced[name], column_reason = check_column(columns[name], name, spec)
        first = pd.isna(reasons)
        reasons[first] = column_reason[first]
    return coerced, reasons


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of ``values`` as they are (lists stay single values)."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _request_type(spec: ColumnSpec) -> Any:
    if spec.type == "float":
        return FiniteFloat
    if spec.type == "int":
        return Int64
    if spec.type == "bool":
        return Annotated[bool, Field(strict=True)]
    if spec.levels:
        return Literal[tuple(spec.levels)]  # type: ignore[valid-type]
    return Annotated[str, Field(strict=True, max_length=1024)]


class TableSource(SourceType):
    """Each declared column is a feature (numeric for float/int, categorical otherwise), but the label."""

    formats: ClassVar[tuple[str, ...]] = ("csv", "parquet")
    Settings = TableSettings
    record_batch_size: ClassVar[int | None] = 16384

    @property
    def inputs(self) -> dict[str, ColumnSpec]:
        """The declared columns that are model inputs (all but the label)."""
        return {name: spec for name, spec in self.settings.columns.items() if name != self.label}

    def features(self) -> dict[str, FeatureKind]:
        return {name: "numeric" if spec.type in ("float", "int") else "categorical" for name, spec in self.inputs.items()}

    def read(self, listed: Any) -> ray.data.Dataset:
        needed = [self.key, *self.settings.columns]
        if self.settings.format == "csv":
            for path in listed.paths:
                check_columns(csv_header(listed.fs, path), needed, self.name, path)
            options = pacsv.ConvertOptions(column_types={c: pa.string() for c in needed}, include_columns=needed,
                                           strings_can_be_null=True)
            import ray.data

            return ray.data.read_csv(listed.paths, filesystem=listed.fs, convert_options=options)
        for path in listed.paths:
            check_columns(parquet_columns(listed.fs, path), needed, self.name, path)
        return read_parquet_files(listed.fs, listed.paths, needed)

    def records(self, batch: pd.DataFrame) -> Split:
        """Type, range, level and required checks; a row without its key is rejected."""
        keys = batch[self.key]
        key_missing = keys.isna() | (keys.astype(str).str.strip() == "")
        good = pd.DataFrame({self.key: keys.astype(object).where(~key_missing, None).map(key_text)}, index=batch.index)
        coerced, reasons = check_table({name: batch[name].to_numpy() for name in self.settings.columns}, self.settings.columns)
        for name, values in coerced.items():
            good[name] = pd.Series(values, index=batch.index, dtype=values.dtype)
        reasons[key_missing.to_numpy()] = f"{self.key}: missing"
        bad = pd.Series(reasons, index=batch.index).notna()
        rejects = reject_frame(self.name, reasons[bad.to_numpy()].tolist(), batch[bad].to_dict("records"))
        return good[~bad].reset_index(drop=True), rejects

    def entities(self, records: pd.DataFrame) -> Split:
        """Every row of a key that appears more than once is rejected (which row is right is unknowable)."""
        duplicated = records[self.key].duplicated(keep=False)
        rejects = reject_frame(self.name, [f"{self.key}: duplicate key"] * int(duplicated.sum()),
                               records[duplicated].to_dict("records"))
        return records[~duplicated].reset_index(drop=True), rejects if len(rejects) else empty_rejects()

    def accepted(self, entities: pd.DataFrame) -> int:
        return len(entities)

    def online(self, instances: list[dict]) -> Columns:
        if not self.inputs:
            return {}
        columns = {name: _objects([r.get(name) for r in instances]) for name in self.inputs}
        coerced, reasons = check_table(columns, self.inputs)
        bad = np.flatnonzero(pd.notna(reasons))
        if len(bad):
            column, problem = reasons[bad[0]].split(": ", 1)
            raise RecordError(field_path(int(bad[0]), column), problem)
        return coerced

    def request_fields(self) -> dict[str, tuple]:
        fields = {}
        for name, spec in self.inputs.items():
            kind = _request_type(spec)
            fields[name] = (kind, ...) if spec.required else (Optional[kind], None)
        return fields


__all__ = ["TableSource", "TableSettings", "check_column", "check_table"]
