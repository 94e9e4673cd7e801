"""Record-level validation and the record step of featurization, one function per format.

Each ``*_records`` function takes a pandas batch as Ray Data reads it and returns
``(good, rejects)``: the good records as ``key`` + columns, and a reject frame with one
reason per bad record. The same functions serve online requests, so a record that would
be quarantined in batch is refused with the same reason online.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

import numpy as np
import pandas as pd

from ray_mlops.config import (
    ColumnSpec,
    EventsSource,
    ImageSource,
    TableSource,
    TextSource,
    TimeseriesSource,
)
from ray_mlops.data import featurize
from ray_mlops.data.quarantine import reject_frame

Split = tuple[pd.DataFrame, pd.DataFrame]


# -- tables -------------------------------------------------------------------------
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


def check_table(columns: dict[str, np.ndarray], source: TableSource) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every declared column coerced, and per row the reason of its first bad column (None if good)."""
    rows = len(next(iter(columns.values()))) if columns else 0
    coerced, reasons = {}, np.full(rows, None, dtype=object)
    for name, spec in source.columns.items():
        coerced[name], column_reason = check_column(columns[name], name, spec)
        first = pd.isna(reasons)
        reasons[first] = column_reason[first]
    return coerced, reasons


def table_records(batch: pd.DataFrame, source: TableSource, key: str) -> Split:
    """Type, range, level and required checks for a one-row-per-entity table."""
    keys = batch[key]
    key_missing = keys.isna() | (keys.astype(str).str.strip() == "")
    good = pd.DataFrame({key: keys.astype(object).where(~key_missing, None).map(_key_text)}, index=batch.index)
    coerced, reasons = check_table({name: batch[name].to_numpy() for name in source.columns}, source)
    for name, values in coerced.items():
        good[name] = pd.Series(values, index=batch.index, dtype=values.dtype)
    reasons[key_missing.to_numpy()] = f"{key}: missing"
    bad = pd.Series(reasons, index=batch.index).notna()
    rejects = reject_frame(source.name, reasons[bad.to_numpy()].tolist(), batch[bad].to_dict("records"))
    return good[~bad].reset_index(drop=True), rejects


def _key_text(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def duplicate_keys(frame: pd.DataFrame, source: str, key: str) -> Split:
    """Reject every row of a key that appears more than once (which row is right is unknowable)."""
    duplicated = frame[key].duplicated(keep=False)
    rejects = reject_frame(source, [f"{key}: duplicate key"] * int(duplicated.sum()), frame[duplicated].to_dict("records"))
    return frame[~duplicated].reset_index(drop=True), rejects


# -- nested JSON Lines --------------------------------------------------------------
def parse_event_line(line: str, key: str) -> tuple[dict | None, str | None]:
    """One JSON line → (event, None) or (None, reason)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None, "malformed JSON"
    if not isinstance(event, dict):
        return None, "not a JSON object"
    if event.get(key) in (None, ""):
        return None, f"{key}: missing"
    return event, None


def event_records(batch: pd.DataFrame, source: EventsSource, key: str) -> Split:
    """JSON Lines (a ``text`` column) → key + flattened event features; bad lines rejected."""
    lines = [line for line in batch["text"].tolist() if line.strip()]
    events, keys, reasons, bad_lines = [], [], [], []
    for line in lines:
        event, reason = parse_event_line(line, key)
        if reason is None:
            events.append(event)
            keys.append(_key_text(event[key]))
        else:
            reasons.append(reason)
            bad_lines.append(line)
    good = featurize.event_record_features(events, source)
    good.insert(0, key, pd.Series(keys, dtype=object))
    return good, reject_frame(source.name, reasons, bad_lines)


# -- files named after the entity ---------------------------------------------------
def key_from_path(path: str, pattern: str) -> str | None:
    match = re.match(pattern, posixpath.basename(path))
    return match.group("key") if match else None


def _file_keys(batch: pd.DataFrame, source: TextSource | ImageSource) -> list[str | None]:
    return [key_from_path(p, source.filename_pattern) for p in batch["path"]]


def text_records(batch: pd.DataFrame, source: TextSource, key: str) -> Split:
    """Text files (``bytes`` + ``path``) → key + per-note counts; non-UTF-8 and unnamed rejected."""
    texts, keys, reasons, bad_paths = [], [], [], []
    for path, data, entity in zip(batch["path"], batch["bytes"], _file_keys(batch, source)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            reasons.append("not UTF-8 text")
            bad_paths.append(path)
            continue
        if entity is None:
            reasons.append("file name does not match filename_pattern")
            bad_paths.append(path)
            continue
        texts.append(text)
        keys.append(entity)
    good = featurize.text_record_features(texts, source)
    good.insert(0, key, pd.Series(keys, dtype=object))
    return good, reject_frame(source.name, reasons, bad_paths)


def image_records(batch: pd.DataFrame, source: ImageSource, key: str) -> Split:
    """Image files (``bytes`` + ``path``) → key + per-image features; unreadable rejected."""
    rows, keys, reasons, bad_paths = [], [], [], []
    for path, data, entity in zip(batch["path"], batch["bytes"], _file_keys(batch, source)):
        if entity is None:
            reasons.append("file name does not match filename_pattern")
            bad_paths.append(path)
            continue
        try:
            pixels = featurize.decode_image(bytes(data), source.size)
        except ValueError:
            reasons.append("unreadable image")
            bad_paths.append(path)
            continue
        rows.append(featurize.image_record_features(pixels))
        keys.append(entity)
    good = pd.DataFrame(rows, columns=featurize.IMAGE_RECORD_FEATURES).astype("float64")
    good.insert(0, key, pd.Series(keys, dtype=object))
    return good, reject_frame(source.name, reasons, bad_paths)


# -- time series --------------------------------------------------------------------
def telemetry_records(batch: pd.DataFrame, source: TimeseriesSource, key: str) -> Split:
    """Readings with a key, a time and finite signal values; the rest rejected."""
    frame = pd.DataFrame({key: batch[key].astype(object).map(_key_text), source.time_column: batch[source.time_column]})
    reasons = pd.Series([None] * len(batch), index=batch.index, dtype=object)
    for signal in source.signals:
        values = pd.to_numeric(batch[signal], errors="coerce").astype("float64")
        reasons[~np.isfinite(values)] = f"{signal}: missing or not finite"
        frame[signal] = values
    reasons[frame[source.time_column].isna()] = f"{source.time_column}: missing"
    reasons[frame[key].isna()] = f"{key}: missing"
    bad = reasons.notna()
    rejects = reject_frame(source.name, reasons[bad].tolist(), batch[bad].to_dict("records"))
    return frame[~bad].reset_index(drop=True), rejects


__all__ = [
    "check_column",
    "check_table",
    "table_records",
    "duplicate_keys",
    "parse_event_line",
    "event_records",
    "key_from_path",
    "text_records",
    "image_records",
    "telemetry_records",
]
