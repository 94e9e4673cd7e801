"""Time series (``timeseries``): long-format readings in Parquet → last-window statistics per signal."""

from __future__ import annotations

import itertools
import math
import operator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Optional, Union

import numpy as np
import pandas as pd
from pydantic import Field

from ray_mlops.config import SourceSettings
from ray_mlops.data.grouped import Groups, std_and_slope
from ray_mlops.data.quarantine import reject_frame
from ray_mlops.data.sources._read import check_columns, files_per_task, parquet_columns, read_parquet_files
from ray_mlops.data.sources._request import MAX_ITEMS_PER_FIELD, FiniteFloat, Text, typed_record
from ray_mlops.data.sources.base import Columns, FeatureKind, Invalid, MultiRecordSource, Split, empty_rejects, entity_groups, key_text, matrix

if TYPE_CHECKING:
    import ray.data  # imported where a Dataset is built: reading a config needs no Ray Data


STATS = ["mean", "std", "min", "max", "last", "slope"]


class TimeseriesSettings(SourceSettings):
    """Long-format readings (entity, time, signals...) in Parquet."""

    format: Literal["timeseries"]
    time_column: str = "timestamp"
    signals: list[str]
    window: int = Field(default=24, ge=2)


_FLOATS = {float}
_NUMBERS = {float, int}  # not bool: ``type(True)`` is ``bool``


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


class TimeseriesSource(MultiRecordSource):
    """Per entity: the reading count, then mean/std/min/max/last/slope of each signal over its last ``window`` readings."""

    formats: ClassVar[tuple[str, ...]] = ("timeseries",)
    Settings = TimeseriesSettings
    count_feature: ClassVar[str] = "n_readings"
    record_batch_size: ClassVar[int | None] = None

    def features(self) -> dict[str, FeatureKind]:
        names = ["n_readings", *[f"{s}.{stat}" for s in self.settings.signals for stat in STATS]]
        return {self.column(name): "numeric" for name in names}

    def entity_columns(self, groups: Groups, readings: np.ndarray) -> Columns:
        """``groups`` ordered by time; ``readings`` one column per signal."""
        window = groups.tail(self.settings.window)
        parts = [groups.sizes.astype(np.float64)[:, None]]
        for i in range(len(self.settings.signals)):
            values = readings[:, i]
            std, slope = std_and_slope(window, values)
            parts.append(np.column_stack([window.mean(values), std, window.min(values), window.max(values),
                                          window.last(values), slope]))
        stacked = np.concatenate(parts, axis=1)
        return {name: stacked[:, j] for j, name in enumerate(self.names)}

    # -- batch ----------------------------------------------------------------------
    def read(self, listed: Any) -> ray.data.Dataset:
        needed = [self.key, self.settings.time_column, *self.settings.signals]
        check_columns(parquet_columns(listed.fs, listed.paths[0]), needed, self.name, listed.paths[0])
        return read_parquet_files(listed.fs, listed.paths, needed, per_task=files_per_task(listed))

    def records(self, batch: pd.DataFrame) -> Split:
        """Readings with a key, a time and finite signal values; the rest rejected."""
        time_column = self.settings.time_column
        frame = pd.DataFrame({self.key: batch[self.key].astype(object).map(key_text), time_column: batch[time_column]})
        reasons = pd.Series([None] * len(batch), index=batch.index, dtype=object)
        for signal in self.settings.signals:
            values = pd.to_numeric(batch[signal], errors="coerce").astype("float64")
            reasons[~np.isfinite(values)] = f"{signal}: missing or not finite"
            frame[signal] = values
        reasons[frame[time_column].isna()] = f"{time_column}: missing"
        reasons[frame[self.key].isna()] = f"{self.key}: missing"
        bad = reasons.notna()
        rejects = reject_frame(self.name, reasons[bad].tolist(), batch[bad].to_dict("records"))
        return frame[~bad].reset_index(drop=True), rejects

    def entities(self, records: pd.DataFrame) -> Split:
        keys, groups = entity_groups(records[self.key], then=records[self.settings.time_column])
        readings = records[self.settings.signals].to_numpy(np.float64)
        return self.entity_frame(keys, self.entity_columns(groups, readings)), empty_rejects()

    # -- online ---------------------------------------------------------------------
    def _reading(self, reading: Any) -> list[float]:
        if not isinstance(reading, dict):
            raise Invalid("expected an object of signal values")
        values = [reading.get(signal) for signal in self.settings.signals]
        if set(map(type, values)) == _FLOATS and math.isfinite(sum(values)):
            return values  # the common case, checked in C: all floats, all finite (an overflowing sum re-checks below)
        if not all(map(_finite_number, values)):
            bad = next(s for s, v in zip(self.settings.signals, values) if not _finite_number(v))
            raise Invalid("expected a finite number", f".{bad}")
        return [float(v) for v in values]

    def _bulk(self, instances: list[dict]) -> tuple[np.ndarray, list[int]] | None:
        """Every reading of a request as one matrix, when all are objects of finite numbers (checked in bulk), else None."""
        lists = [record.get(self.name) or [] for record in instances]
        if not all(type(readings) is list for readings in lists):
            return None
        signals = self.settings.signals
        pick = operator.itemgetter(*signals) if len(signals) > 1 else lambda reading: (reading[signals[0]],)
        try:
            picked = [pick(reading) for readings in lists for reading in readings]
        except (KeyError, TypeError, IndexError):  # a reading that is not an object of every signal
            return None
        if not set(map(type, itertools.chain.from_iterable(picked))) <= _NUMBERS:
            return None
        try:
            values = matrix(picked, len(signals))
        except OverflowError:  # an integer beyond float range
            return None
        if not np.isfinite(values).all():
            return None
        return values, [i for i, readings in enumerate(lists) for _ in readings]

    def online(self, instances: list[dict]) -> Columns:
        bulk = self._bulk(instances)  # readings arrive oldest first
        if bulk is None:  # something to refuse (or a lone string or object): reading by reading, naming a bad one
            readings, rows = self.items(instances, self._reading)
            bulk = matrix(readings, len(self.settings.signals)), rows
        values, rows = bulk
        return self.per_instance(rows, len(instances), lambda groups: self.entity_columns(groups, values))

    def request_fields(self) -> dict[str, tuple]:
        fields: dict[str, Any] = {signal: (FiniteFloat, ...) for signal in self.settings.signals}
        fields[self.settings.time_column] = (Optional[Union[Text, FiniteFloat]], None)
        reading = typed_record(f"{self.name.title()}Reading", fields)
        listed = Optional[Annotated[list[reading], Field(max_length=MAX_ITEMS_PER_FIELD)]]  # type: ignore[valid-type]
        return {self.name: (listed, Field(default=None, description=f"{self.name}: recent readings, oldest first"))}


__all__ = ["TimeseriesSource", "TimeseriesSettings"]
