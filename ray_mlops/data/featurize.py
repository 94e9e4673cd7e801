"""Stateless featurizers shared by batch ingestion and online serving.

Each modality has two steps, both vectorized over a pandas frame of records:

1. a *record* step (one note, one image, one event, one telemetry reading → numbers),
2. an *entity* step that aggregates an entity's records into one feature row.

Ray Data runs them in ``map_batches`` over hash-partitioned blocks (every record of an
entity in the same block); a Serve replica runs the very same functions on the records
of one request. The output columns of every function depend only on the source's
configuration, never on the data, so batch and online rows always line up.

Each step has an array core (``*_record_matrix``, ``*_entity_matrix``: records as rows of
a float matrix, entities as :class:`~ray_mlops.data.grouped.Groups`) and a pandas
wrapper for Ray Data batches (``*_record_features``, ``*_entity_features``). The wrappers
only convert; a Serve replica calls the cores directly and skips the frames.
"""

from __future__ import annotations

import io
import re
import zlib
from typing import Any, Iterable

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from ray_mlops.config import EventsSource, ImageSource, TextSource, TimeseriesSource
from ray_mlops.data.grouped import Groups, std_and_slope

_WORD = re.compile(r"[a-z0-9]+")
IMAGE_RECORD_FEATURES = ["mean", "std", "dark_fraction", "edge_density", "redness"]
TELEMETRY_STATS = ["mean", "std", "min", "max", "last", "slope"]


def feature_name(source: str, feature: str) -> str:
    """Columns from a multi-record source are prefixed with its name: ``notes__kw_leak``."""
    return f"{source}__{feature}"


def entity_groups(keys: pd.Series, then: pd.Series | None = None) -> tuple[pd.Index, Groups]:
    """The sorted distinct entity keys of records, and the records grouped by them (ordered by ``then``)."""
    codes, uniques = pd.factorize(keys, sort=True)
    order = None if then is None else then.to_numpy()
    return pd.Index(np.asarray(uniques)), Groups.from_codes(codes, len(uniques), then=order)


def _entity_frame(key: str, keys: pd.Index, matrix: np.ndarray, source: str, names: list[str]) -> pd.DataFrame:
    """Entity rows: the key column, then ``matrix`` under the source-prefixed ``names``."""
    frame = pd.DataFrame(matrix.reshape(len(keys), len(names)), columns=[feature_name(source, n) for n in names])
    frame.insert(0, key, keys)
    return frame


def _record_frame(matrix: list[list[float]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(matrix, dtype=np.float64).reshape(len(matrix), len(columns)), columns=columns)


# -- text ---------------------------------------------------------------------------
def text_feature_names(source: TextSource) -> list[str]:
    kw = [f"kw_{word}" for word in source.keywords]
    hashed = [f"hash_{i}" for i in range(source.hash_features)]
    return ["n_notes", "n_words", "n_chars", *kw, *hashed]


def _bucket(word: str, buckets: int) -> int:
    return zlib.crc32(word.encode()) % buckets


def text_record_matrix(texts: Iterable[str], source: TextSource) -> list[list[float]]:
    """Additive counts per note (rows; columns as :func:`text_feature_names`): words, characters, keyword hits, hashed word buckets."""
    return [_note_counts(text, source) for text in texts]


def _note_counts(text: str, source: TextSource) -> list[float]:
    words = _WORD.findall(text.lower())
    hashed = [0.0] * source.hash_features
    for word in words if source.hash_features else ():
        hashed[_bucket(word, source.hash_features)] += 1.0
    return [1.0, float(len(words)), float(len(text)), *(float(words.count(kw)) for kw in source.keywords), *hashed]


def text_record_features(texts: Iterable[str], source: TextSource) -> pd.DataFrame:
    """:func:`text_record_matrix` as a frame."""
    return _record_frame(text_record_matrix(texts, source), text_feature_names(source))


def text_entity_matrix(groups: Groups, counts: np.ndarray) -> np.ndarray:
    """Sum each entity's per-note counts."""
    return groups.sum(counts)


def text_entity_features(records: pd.DataFrame, source: TextSource, key: str) -> pd.DataFrame:
    """Sum an entity's per-note counts (``records``: key + record features)."""
    columns = text_feature_names(source)
    keys, groups = entity_groups(records[key])
    return _entity_frame(key, keys, text_entity_matrix(groups, records[columns].to_numpy(np.float64)), source.name, columns)


# -- images -------------------------------------------------------------------------
def decode_image(data: bytes, size: int) -> np.ndarray:
    """PNG/JPEG bytes → float RGB array in [0, 1] of ``size``×``size``; ValueError if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"unreadable image: {exc}") from exc
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float64) / 255.0


def image_record_matrix(pixels: np.ndarray) -> np.ndarray:
    """Per image of a stack (N×size×size×3): brightness, contrast, dark-spot share, edge density, redness."""
    grey = pixels.mean(axis=3)
    edges = np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2))
    dark = (grey < 0.4).mean(axis=(1, 2))
    redness = (pixels[..., 0] - pixels[..., 2]).mean(axis=(1, 2))
    return np.column_stack([grey.mean(axis=(1, 2)), grey.std(axis=(1, 2)), dark, edges, redness])


def image_record_features(pixels: np.ndarray) -> dict[str, float]:
    """:func:`image_record_matrix` of one image, by feature name."""
    return dict(zip(IMAGE_RECORD_FEATURES, image_record_matrix(pixels[None])[0].tolist()))


def image_feature_names() -> list[str]:
    return ["n_images", *IMAGE_RECORD_FEATURES]


def image_entity_matrix(groups: Groups, per_image: np.ndarray) -> np.ndarray:
    """Per entity: its image count, then the mean of each per-image feature."""
    return np.column_stack([groups.sizes.astype(np.float64), groups.mean(per_image)])


def image_entity_features(records: pd.DataFrame, source: ImageSource, key: str) -> pd.DataFrame:
    """Average an entity's per-image features and count its images."""
    keys, groups = entity_groups(records[key])
    matrix = image_entity_matrix(groups, records[IMAGE_RECORD_FEATURES].to_numpy(np.float64))
    return _entity_frame(key, keys, matrix, source.name, image_feature_names())


# -- nested JSON events -------------------------------------------------------------
def _walk(value: Any, path: list[str]) -> list[Any]:
    """Values at a dotted path; lists along the way are traversed element-wise."""
    if not path:
        return value if isinstance(value, list) else [value]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _walk(item, path)]
    if isinstance(value, dict) and path[0] in value:
        return _walk(value[path[0]], path[1:])
    return []


def _number(values: list[Any]) -> float:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(np.sum(numbers)) if numbers else np.nan


def event_record_matrix(events: Iterable[dict], source: EventsSource) -> list[list[float]]:
    """Flatten nested events (rows; columns as :func:`event_record_columns`): numeric paths (summed over lists), level indicators, list lengths."""
    return [_event_row(event, source) for event in events]


def _event_row(event: dict, source: EventsSource) -> list[float]:
    row = [_number(_walk(event, field.split("."))) for field in source.numeric_fields]
    for field, levels in source.categorical_fields.items():
        found = {str(v) for v in _walk(event, field.split(".")) if v is not None}
        row += [float(level in found) for level in levels]
        row.append(float(bool(found - set(levels))))
    for field in source.list_fields:
        value = event.get(field)
        row.append(float(len(value)) if isinstance(value, list) else 0.0)
    return row


def event_record_features(events: Iterable[dict], source: EventsSource) -> pd.DataFrame:
    """:func:`event_record_matrix` as a frame."""
    return _record_frame(event_record_matrix(events, source), event_record_columns(source))


def event_record_columns(source: EventsSource) -> list[str]:
    """The columns of :func:`event_record_matrix`."""
    columns = list(source.numeric_fields)
    for field, levels in source.categorical_fields.items():
        columns += [f"{field}={level}" for level in levels] + [f"{field}=other"]
    return columns + [f"{field}.len" for field in source.list_fields]


def event_feature_names(source: EventsSource) -> list[str]:
    names = ["n_events"]
    names += [f"{f}.{stat}" for f in source.numeric_fields for stat in ("mean", "max")]
    for field, levels in source.categorical_fields.items():
        names += [f"{field}={level}.count" for level in levels] + [f"{field}=other.count"]
    return names + [f"{f}.len.mean" for f in source.list_fields]


def event_entity_matrix(groups: Groups, flat: np.ndarray, source: EventsSource) -> np.ndarray:
    """Per entity (columns as :func:`event_feature_names`): event count; mean and max of numeric paths; level counts; mean list length."""
    numeric = len(source.numeric_fields)
    lists = len(source.list_fields)
    values = flat[:, :numeric]
    means, maxima = groups.mean(values), groups.max(values)
    parts = [groups.sizes.astype(np.float64)[:, None], np.stack([means, maxima], axis=2).reshape(len(groups.sizes), 2 * numeric)]
    parts += [groups.sum(flat[:, numeric : flat.shape[1] - lists]), groups.mean(flat[:, flat.shape[1] - lists :])]
    return np.concatenate(parts, axis=1)


def event_entity_features(records: pd.DataFrame, source: EventsSource, key: str) -> pd.DataFrame:
    """Per entity: event count; mean and max of numeric paths; level counts; mean list length."""
    keys, groups = entity_groups(records[key])
    flat = records[event_record_columns(source)].to_numpy(np.float64)
    return _entity_frame(key, keys, event_entity_matrix(groups, flat, source), source.name, event_feature_names(source))


# -- time series --------------------------------------------------------------------
def telemetry_feature_names(source: TimeseriesSource) -> list[str]:
    return ["n_readings", *[f"{s}.{stat}" for s in source.signals for stat in TELEMETRY_STATS]]


def telemetry_entity_matrix(groups: Groups, readings: np.ndarray, source: TimeseriesSource) -> np.ndarray:
    """Per entity (``groups`` ordered by time; columns as :func:`telemetry_feature_names`):
    the reading count, then mean/std/min/max/last/slope per signal over the last ``window`` readings."""
    window = groups.tail(source.window)
    parts = [groups.sizes.astype(np.float64)[:, None]]
    for i in range(len(source.signals)):
        values = readings[:, i]
        std, slope = std_and_slope(window, values)
        parts.append(np.column_stack([window.mean(values), std, window.min(values), window.max(values), window.last(values), slope]))
    return np.concatenate(parts, axis=1)


def telemetry_entity_features(readings: pd.DataFrame, source: TimeseriesSource, key: str) -> pd.DataFrame:
    """Per entity: the last ``window`` readings by time → mean/std/min/max/last/slope per signal."""
    keys, groups = entity_groups(readings[key], then=readings[source.time_column])
    matrix = telemetry_entity_matrix(groups, readings[source.signals].to_numpy(np.float64), source)
    return _entity_frame(key, keys, matrix, source.name, telemetry_feature_names(source))


__all__ = [
    "feature_name",
    "entity_groups",
    "text_record_matrix",
    "text_entity_matrix",
    "image_entity_matrix",
    "image_record_matrix",
    "event_record_matrix",
    "event_record_columns",
    "event_entity_matrix",
    "telemetry_entity_matrix",
    "text_feature_names",
    "text_record_features",
    "text_entity_features",
    "decode_image",
    "image_record_features",
    "image_feature_names",
    "image_entity_features",
    "event_record_features",
    "event_feature_names",
    "event_entity_features",
    "telemetry_feature_names",
    "telemetry_entity_features",
]
