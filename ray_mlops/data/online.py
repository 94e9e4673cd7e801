"""Online featurization: raw request records → feature rows, with the batch code.

A raw record carries every modality of the configured sources:

- the columns of the table sources (except the label) at the top level,
- for each multi-record source, a field named after the source: a list of nested JSON
  events (``jsonl``), a list of note strings (``text``), a list of base64-encoded images
  (``image``), a list of readings ``{time_column: ..., signal: value, ...}`` oldest first
  (``timeseries``). A single string is accepted where a list of strings is expected.

The record and entity steps are the very functions batch ingestion runs in Ray Data, so
a record featurized here equals its row in the feature table. A bad record raises
:class:`RecordError` naming the field (``instances[2].age_years: not a number``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from ray_mlops.config import Config, EventsSource, ImageSource, TableSource, TextSource, TimeseriesSource
from ray_mlops.data import featurize, records
from ray_mlops.data.schema import FeatureSchema, cast_features, feature_schema
from ray_mlops.errors import DataError

ROW = "__row"


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


def _table_part(instances: list[dict], source: TableSource, label: str) -> pd.DataFrame:
    columns = {name: spec for name, spec in source.columns.items() if name != label}
    if not columns:
        return pd.DataFrame({ROW: pd.Series(dtype=object)})
    frame = pd.DataFrame({name: [record.get(name) for record in instances] for name in columns})
    frame.insert(0, ROW, [str(i) for i in range(len(instances))])
    checked = source.model_copy(update={"columns": columns})
    good, rejects = records.table_records(frame, checked, ROW)
    if not rejects.empty:
        row = int(json.loads(rejects["record"].iloc[0])[ROW])
        column, problem = rejects["reason"].iloc[0].split(": ", 1)
        raise RecordError(_field(row, column), problem)
    return good


def _items(instances: list[dict], source: Any, parse: Callable[[Any, str], Any]) -> tuple[list, list[str]]:
    """Every item of a multi-record field, parsed (``parse(item, field)`` raises RecordError), with its row."""
    items, rows = [], []
    for i, record in enumerate(instances):
        for j, item in enumerate(_as_list(record.get(source.name), i, source.name)):
            items.append(parse(item, _field(i, source.name, j)))
            rows.append(str(i))
    return items, rows


def _expect(kind: type, problem: str) -> Callable[[Any, str], Any]:
    def parse(item: Any, field: str) -> Any:
        if not isinstance(item, kind):
            raise RecordError(field, problem)
        return item

    return parse


def _keyed(frame: pd.DataFrame, rows: list[str]) -> pd.DataFrame:
    frame.insert(0, ROW, pd.Series(rows, dtype=object))
    return frame


def _events_part(instances: list[dict], source: EventsSource) -> pd.DataFrame:
    events, rows = _items(instances, source, _expect(dict, "expected a JSON object"))
    flat = _keyed(featurize.event_record_features(events, source), rows)
    return featurize.event_entity_features(flat, source, ROW)


def _text_part(instances: list[dict], source: TextSource) -> pd.DataFrame:
    texts, rows = _items(instances, source, _expect(str, "expected a string"))
    counts = _keyed(featurize.text_record_features(texts, source), rows)
    return featurize.text_entity_features(counts, source, ROW)


def decode_base64_image(value: Any, field: str, size: int) -> dict[str, float]:
    """A base64 image string → its per-image features; RecordError naming ``field`` if bad."""
    if not isinstance(value, str):
        raise RecordError(field, "expected a base64-encoded image string")
    try:
        data = base64.b64decode(value.split(",", 1)[-1], validate=True)
        return featurize.image_record_features(featurize.decode_image(data, size))
    except (binascii.Error, ValueError) as exc:
        raise RecordError(field, "not a readable base64-encoded image") from exc


def _image_part(instances: list[dict], source: ImageSource) -> pd.DataFrame:
    features, rows = _items(instances, source, lambda value, field: decode_base64_image(value, field, source.size))
    per_image = pd.DataFrame(features, columns=featurize.IMAGE_RECORD_FEATURES).astype("float64")
    return featurize.image_entity_features(_keyed(per_image, rows), source, ROW)


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _reading(source: TimeseriesSource) -> Callable[[Any, str], dict]:
    def parse(reading: Any, field: str) -> dict:
        if not isinstance(reading, dict):
            raise RecordError(field, "expected an object of signal values")
        for signal in source.signals:
            if not _finite_number(reading.get(signal)):
                raise RecordError(f"{field}.{signal}", "expected a finite number")
        return {s: float(reading[s]) for s in source.signals}

    return parse


def _telemetry_part(instances: list[dict], source: TimeseriesSource) -> pd.DataFrame:
    readings, rows = _items(instances, source, _reading(source))
    frame = _keyed(pd.DataFrame(readings, columns=source.signals), rows)
    frame[source.time_column] = range(len(frame))  # readings arrive oldest first
    return featurize.telemetry_entity_features(frame, source, ROW)


def _source_part(instances: list[dict], source: Any, label: str) -> pd.DataFrame:
    if isinstance(source, TableSource):
        return _table_part(instances, source, label)
    builder = {EventsSource: _events_part, TextSource: _text_part, ImageSource: _image_part, TimeseriesSource: _telemetry_part}
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
    merged = pd.DataFrame({ROW: [str(i) for i in range(len(instances))]})
    for source in config.data.sources:
        merged = merged.merge(_source_part(instances, source, config.data.label), on=ROW, how="left")
    features = cast_features(merged, schema)
    return features[list(schema.features)]


__all__ = ["featurize_instances", "RecordError", "decode_base64_image"]
