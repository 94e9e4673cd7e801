"""Online featurization: raw request records → feature rows, with the batch code.

A raw record carries every modality of the configured sources:

- the columns of the table sources (except the label) at the top level,
- for each multi-record source, a field named after the source: a list of nested JSON
  events (``jsonl``), a list of note strings (``text``), a list of base64-encoded images
  (``image``), a list of readings ``{time_column: ..., signal: value, ...}`` oldest first
  (``timeseries``). A single string is accepted where a list of strings is expected.

The record and entity steps are the array cores of the very functions batch ingestion
runs in Ray Data (``records.check_table``, ``featurize.*_matrix``, ``schema.cast_columns``),
so a record featurized here equals its row in the feature table; skipping the pandas
frames around them keeps a small request at a few milliseconds. A bad record raises
:class:`RecordError` naming the field (``instances[2].age_years: not a number``).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ray_mlops.config import Config, EventsSource, ImageSource, TableSource, TextSource, TimeseriesSource
from ray_mlops.data import featurize, records
from ray_mlops.data.grouped import Groups
from ray_mlops.data.schema import FeatureSchema, cast_columns, feature_schema
from ray_mlops.errors import DataError

Columns = dict[str, np.ndarray]


class RecordError(DataError):
    """A raw record is malformed; ``field`` names where (``instances[0].notes[1]``)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _field(index: int, *parts: Any) -> str:
    path = f"instances[{index}]"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _as_list(value: Any, index: int, name: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if not isinstance(value, list):
        raise RecordError(_field(index, name), "expected a list")
    return value


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of ``values`` as they are (lists stay single values)."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _table_columns(instances: list[dict], source: TableSource, label: str) -> Columns:
    columns = {name: spec for name, spec in source.columns.items() if name != label}
    if not columns:
        return {}
    checked = source.model_copy(update={"columns": columns})
    coerced, reasons = records.check_table({name: _objects([r.get(name) for r in instances]) for name in columns}, checked)
    bad = np.flatnonzero(pd.notna(reasons))
    if len(bad):
        column, problem = reasons[bad[0]].split(": ", 1)
        raise RecordError(_field(int(bad[0]), column), problem)
    return coerced


class _Invalid(Exception):
    """An item is malformed: ``problem``, at ``below`` inside the item (``.vibration``; "" for the item itself)."""

    def __init__(self, problem: str, below: str = ""):
        super().__init__(problem)
        self.problem, self.below = problem, below


def _items(instances: list[dict], source: Any, parse: Callable[[Any], Any]) -> tuple[list, list[int]]:
    """Every item of a multi-record field, parsed, with its row; RecordError naming the item ``parse`` refuses."""
    items, rows = [], []
    for i, record in enumerate(instances):
        for j, item in enumerate(_as_list(record.get(source.name), i, source.name)):
            try:
                items.append(parse(item))
            except _Invalid as exc:
                raise RecordError(_field(i, source.name, j) + exc.below, exc.problem) from None
            rows.append(i)
    return items, rows


def _expect(kind: type, problem: str) -> Callable[[Any], Any]:
    def parse(item: Any) -> Any:
        if not isinstance(item, kind):
            raise _Invalid(problem)
        return item

    return parse


def _matrix(rows: list[list[float]], width: int) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)


def _entity_columns(rows: list[int], n: int, source: Any, names: list[str], aggregate: Callable[[Groups], np.ndarray]) -> Columns:
    """Entity features of each of ``n`` instances from its items' ``rows``; NaN for an instance without items."""
    present, codes = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    matrix = np.full((n, len(names)), np.nan)
    if len(present):
        matrix[present] = aggregate(Groups.from_codes(codes, len(present)))
    return {featurize.feature_name(source.name, name): matrix[:, j] for j, name in enumerate(names)}


def _events_columns(instances: list[dict], source: EventsSource) -> Columns:
    events, rows = _items(instances, source, _expect(dict, "expected a JSON object"))
    flat = _matrix(featurize.event_record_matrix(events, source), len(featurize.event_record_columns(source)))
    names = featurize.event_feature_names(source)
    return _entity_columns(rows, len(instances), source, names, lambda g: featurize.event_entity_matrix(g, flat, source))


def _text_columns(instances: list[dict], source: TextSource) -> Columns:
    texts, rows = _items(instances, source, _expect(str, "expected a string"))
    names = featurize.text_feature_names(source)
    counts = _matrix(featurize.text_record_matrix(texts, source), len(names))
    return _entity_columns(rows, len(instances), source, names, lambda g: featurize.text_entity_matrix(g, counts))


def _image_pixels(value: Any, size: int) -> np.ndarray:
    """A base64 image string → its RGB pixels (as :func:`featurize.decode_image`)."""
    if not isinstance(value, str):
        raise _Invalid("expected a base64-encoded image string")
    try:
        return featurize.decode_image(base64.b64decode(value.split(",", 1)[-1], validate=True), size)
    except (binascii.Error, ValueError) as exc:
        raise _Invalid("not a readable base64-encoded image") from exc


def decode_base64_image(value: Any, field: str, size: int) -> dict[str, float]:
    """A base64 image string → its per-image features; RecordError naming ``field`` if bad."""
    try:
        return featurize.image_record_features(_image_pixels(value, size))
    except _Invalid as exc:
        raise RecordError(field, exc.problem) from exc


def _image_columns(instances: list[dict], source: ImageSource) -> Columns:
    pixels, rows = _items(instances, source, lambda value: _image_pixels(value, source.size))
    width = len(featurize.IMAGE_RECORD_FEATURES)
    per_image = featurize.image_record_matrix(np.stack(pixels)) if pixels else np.empty((0, width))
    names = featurize.image_feature_names()
    return _entity_columns(rows, len(instances), source, names, lambda g: featurize.image_entity_matrix(g, per_image))


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _reading(source: TimeseriesSource) -> Callable[[Any], list[float]]:
    def parse(reading: Any) -> list[float]:
        if not isinstance(reading, dict):
            raise _Invalid("expected an object of signal values")
        values = [reading.get(signal) for signal in source.signals]
        if not all(map(_finite_number, values)):
            bad = next(s for s, v in zip(source.signals, values) if not _finite_number(v))
            raise _Invalid("expected a finite number", f".{bad}")
        return [float(v) for v in values]

    return parse


def _telemetry_columns(instances: list[dict], source: TimeseriesSource) -> Columns:
    readings, rows = _items(instances, source, _reading(source))  # readings arrive oldest first
    values = _matrix(readings, len(source.signals))
    names = featurize.telemetry_feature_names(source)
    return _entity_columns(rows, len(instances), source, names, lambda g: featurize.telemetry_entity_matrix(g, values, source))


def _source_columns(instances: list[dict], source: Any, label: str) -> Columns:
    if isinstance(source, TableSource):
        return _table_columns(instances, source, label)
    builder = {EventsSource: _events_columns, TextSource: _text_columns, ImageSource: _image_columns, TimeseriesSource: _telemetry_columns}
    return builder[type(source)](instances, source)


def featurize_instances(config: Config, instances: list[dict], schema: FeatureSchema | None = None) -> pd.DataFrame:
    """Raw records → one feature row each, in the feature table's column order.

    >>> from ray_mlops.config import load_config
    >>> rows = featurize_instances(load_config(), [{"model": "A100", "site": "S01", "age_years": 3,
    ...     "load_class": "low", "rated_power_kw": 150, "firmware": 2, "notes": "worn belt, leak"}])
    >>> rows.loc[0, "notes__kw_leak"], rows.loc[0, "age_years"]
    (np.float64(1.0), np.float64(3.0))
    """
    schema = schema or feature_schema(config)
    for i, record in enumerate(instances):
        if not isinstance(record, dict):
            raise RecordError(_field(i), "expected a JSON object")
    columns: Columns = {}
    for source in config.data.sources:
        columns.update(_source_columns(instances, source, config.data.label))
    return cast_columns(columns, len(instances), schema)


__all__ = ["featurize_instances", "RecordError", "decode_base64_image"]
