"""Stateless featurizers shared by batch ingestion and online serving.

Each modality has two steps, both vectorized over a pandas frame of records:

1. a *record* step (one note, one image, one event, one telemetry reading → numbers),
2. an *entity* step that aggregates an entity's records into one feature row.

Ray Data runs them in ``map_batches`` over hash-partitioned blocks (every record of an
entity in the same block); a Serve replica runs the very same functions on the records
of one request. The output columns of every function depend only on the source's
configuration, never on the data, so batch and online rows always line up.
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

_WORD = re.compile(r"[a-z0-9]+")
IMAGE_RECORD_FEATURES = ["mean", "std", "dark_fraction", "edge_density", "redness"]
TELEMETRY_STATS = ["mean", "std", "min", "max", "last", "slope"]


def feature_name(source: str, feature: str) -> str:
    """Columns from a multi-record source are prefixed with its name: ``notes__kw_leak``."""
    return f"{source}__{feature}"


def _prefixed(frame: pd.DataFrame, source: str, key: str) -> pd.DataFrame:
    return frame.rename(columns={c: feature_name(source, c) for c in frame.columns if c != key})


# -- text ---------------------------------------------------------------------------
def text_feature_names(source: TextSource) -> list[str]:
    kw = [f"kw_{word}" for word in source.keywords]
    hashed = [f"hash_{i}" for i in range(source.hash_features)]
    return ["n_notes", "n_words", "n_chars", *kw, *hashed]


def _bucket(word: str, buckets: int) -> int:
    return zlib.crc32(word.encode()) % buckets


def text_record_features(texts: Iterable[str], source: TextSource) -> pd.DataFrame:
    """Additive counts per note: words, characters, keyword hits, hashed word buckets."""
    rows = []
    for text in texts:
        words = _WORD.findall(text.lower())
        row = {"n_notes": 1, "n_words": len(words), "n_chars": len(text)}
        row.update({f"kw_{kw}": words.count(kw) for kw in source.keywords})
        hashed = np.zeros(source.hash_features, dtype=np.int64)
        for word in words if source.hash_features else ():
            hashed[_bucket(word, source.hash_features)] += 1
        row.update({f"hash_{i}": int(v) for i, v in enumerate(hashed)})
        rows.append(row)
    return pd.DataFrame(rows, columns=text_feature_names(source)).astype("float64")


def text_entity_features(records: pd.DataFrame, source: TextSource, key: str) -> pd.DataFrame:
    """Sum an entity's per-note counts (``records``: key + record features)."""
    columns = text_feature_names(source)
    summed = records.groupby(key, sort=True)[columns].sum().reset_index()
    return _prefixed(summed, source.name, key)


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


def image_record_features(pixels: np.ndarray) -> dict[str, float]:
    """Brightness, contrast, dark-spot share, edge density and redness of one image."""
    grey = pixels.mean(axis=2)
    edges = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
    return {
        "mean": float(grey.mean()),
        "std": float(grey.std()),
        "dark_fraction": float((grey < 0.4).mean()),
        "edge_density": float(edges),
        "redness": float((pixels[..., 0] - pixels[..., 2]).mean()),
    }


def image_feature_names() -> list[str]:
    return ["n_images", *IMAGE_RECORD_FEATURES]


def image_entity_features(records: pd.DataFrame, source: ImageSource, key: str) -> pd.DataFrame:
    """Average an entity's per-image features and count its images."""
    grouped = records.groupby(key, sort=True)
    means = grouped[IMAGE_RECORD_FEATURES].mean()
    means.insert(0, "n_images", grouped.size().astype("float64"))
    return _prefixed(means.reset_index(), source.name, key)


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


def event_record_features(events: Iterable[dict], source: EventsSource) -> pd.DataFrame:
    """Flatten nested events: numeric paths (summed over lists), level indicators, list lengths."""
    rows = []
    for event in events:
        row: dict[str, float] = {}
        for field in source.numeric_fields:
            row[field] = _number(_walk(event, field.split(".")))
        for field, levels in source.categorical_fields.items():
            found = {str(v) for v in _walk(event, field.split(".")) if v is not None}
            for level in levels:
                row[f"{field}={level}"] = float(level in found)
            row[f"{field}=other"] = float(bool(found - set(levels)))
        for field in source.list_fields:
            value = event.get(field)
            row[f"{field}.len"] = float(len(value)) if isinstance(value, list) else 0.0
        rows.append(row)
    return pd.DataFrame(rows, columns=_event_record_columns(source)).astype("float64")


def _event_record_columns(source: EventsSource) -> list[str]:
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


def event_entity_features(records: pd.DataFrame, source: EventsSource, key: str) -> pd.DataFrame:
    """Per entity: event count; mean and max of numeric paths; level counts; mean list length."""
    grouped = records.groupby(key, sort=True)
    parts = [grouped.size().astype("float64").rename("n_events")]
    for field in source.numeric_fields:
        parts += [grouped[field].mean().rename(f"{field}.mean"), grouped[field].max().rename(f"{field}.max")]
    indicator_columns = [c for c in _event_record_columns(source) if "=" in c]
    parts += [grouped[c].sum().rename(f"{c}.count") for c in indicator_columns]
    parts += [grouped[f"{f}.len"].mean().rename(f"{f}.len.mean") for f in source.list_fields]
    entity = pd.concat(parts, axis=1)[event_feature_names(source)].reset_index()
    return _prefixed(entity, source.name, key)


# -- time series --------------------------------------------------------------------
def telemetry_feature_names(source: TimeseriesSource) -> list[str]:
    return ["n_readings", *[f"{s}.{stat}" for s in source.signals for stat in TELEMETRY_STATS]]


def _window_stats(window: pd.DataFrame, signal: str, key: str) -> pd.DataFrame:
    grouped = window.groupby(key, sort=True)[signal]
    stats = grouped.agg(["mean", "std", "min", "max", "last"])
    position = window.groupby(key, sort=True).cumcount().astype("float64")
    centred_t = position - position.groupby(window[key]).transform("mean")
    centred_x = window[signal] - grouped.transform("mean")
    numerator = (centred_t * centred_x).groupby(window[key]).sum()
    denominator = (centred_t**2).groupby(window[key]).sum()
    stats["slope"] = (numerator / denominator.where(denominator > 0)).reindex(stats.index)
    return stats.rename(columns={stat: f"{signal}.{stat}" for stat in TELEMETRY_STATS})


def telemetry_entity_features(readings: pd.DataFrame, source: TimeseriesSource, key: str) -> pd.DataFrame:
    """Per entity: the last ``window`` readings by time → mean/std/min/max/last/slope per signal."""
    ordered = readings.sort_values([key, source.time_column], kind="stable")
    counts = ordered.groupby(key, sort=True).size().astype("float64").rename("n_readings")
    window = ordered.groupby(key, sort=False).tail(source.window)
    parts = [counts, *(_window_stats(window, signal, key) for signal in source.signals)]
    entity = pd.concat(parts, axis=1)[telemetry_feature_names(source)].reset_index()
    return _prefixed(entity, source.name, key)


__all__ = [
    "feature_name",
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
