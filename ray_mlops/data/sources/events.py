"""Nested JSON Lines (``jsonl``): several events per entity, flattened and aggregated to one row."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from ray_mlops.config import SourceSettings
from ray_mlops.data.grouped import Groups
from ray_mlops.data.quarantine import reject_frame
from ray_mlops.data.sources._read import files_per_task, read_files
from ray_mlops.data.sources._request import JsonObjects
from ray_mlops.data.sources.base import (
    Columns,
    FeatureKind,
    MultiRecordSource,
    Split,
    empty_rejects,
    entity_groups,
    expect,
    key_text,
    matrix,
)

if TYPE_CHECKING:
    import ray.data  # imported where a Dataset is built: reading a config needs no Ray Data


class EventsSettings(SourceSettings):
    """Nested JSON Lines: which dotted paths are numbers, levels and lists."""

    format: Literal["jsonl"]
    numeric_fields: list[str] = Field(default_factory=list)
    categorical_fields: dict[str, list[str]] = Field(default_factory=dict)
    list_fields: list[str] = Field(default_factory=list)


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
    if not numbers:
        return np.nan
    # numpy sums fewer than 8 floats left to right from 0.0, as ``sum`` does (and 40x faster for a few)
    return float(sum(numbers)) if len(numbers) < 8 else float(np.sum(numbers))


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


class EventsSource(MultiRecordSource):
    """Per entity: event count; mean and max of numeric paths; level counts; mean list length."""

    formats: ClassVar[tuple[str, ...]] = ("jsonl",)
    Settings = EventsSettings
    count_feature: ClassVar[str] = "n_events"

    # -- columns --------------------------------------------------------------------
    def record_columns(self) -> list[str]:
        """Per event: numeric paths (summed over lists), level indicators (+ other), list lengths."""
        s = self.settings
        columns = list(s.numeric_fields)
        for field, levels in s.categorical_fields.items():
            columns += [f"{field}={level}" for level in levels] + [f"{field}=other"]
        return columns + [f"{field}.len" for field in s.list_fields]

    def features(self) -> dict[str, FeatureKind]:
        s = self.settings
        names = ["n_events", *[f"{f}.{stat}" for f in s.numeric_fields for stat in ("mean", "max")]]
        for field, levels in s.categorical_fields.items():
            names += [f"{field}={level}.count" for level in levels] + [f"{field}=other.count"]
        names += [f"{f}.len.mean" for f in s.list_fields]
        return {self.column(name): "numeric" for name in names}

    # -- arithmetic (shared by batch and online) ------------------------------------
    def record_matrix(self, events: list[dict]) -> np.ndarray:
        return matrix([self._event_row(event) for event in events], len(self.record_columns()))

    def _event_row(self, event: dict) -> list[float]:
        s = self.settings
        row = [_number(_walk(event, field.split("."))) for field in s.numeric_fields]
        for field, levels in s.categorical_fields.items():
            found = {str(v) for v in _walk(event, field.split(".")) if v is not None}
            row += [float(level in found) for level in levels]
            row.append(float(bool(found - set(levels))))
        for field in s.list_fields:
            value = event.get(field)
            row.append(float(len(value)) if isinstance(value, list) else 0.0)
        return row

    def entity_columns(self, groups: Groups, flat: np.ndarray) -> Columns:
        numeric, lists = len(self.settings.numeric_fields), len(self.settings.list_fields)
        values = flat[:, :numeric]
        means, maxima = groups.mean(values), groups.max(values)
        parts = [groups.sizes.astype(np.float64)[:, None],
                 np.stack([means, maxima], axis=2).reshape(len(groups.sizes), 2 * numeric),
                 groups.sum(flat[:, numeric : flat.shape[1] - lists]),
                 groups.mean(flat[:, flat.shape[1] - lists :])]
        matrix_ = np.concatenate(parts, axis=1)
        return {name: matrix_[:, j] for j, name in enumerate(self.names)}

    # -- batch ----------------------------------------------------------------------
    def read(self, listed: Any) -> ray.data.Dataset:
        return read_files(listed.fs, listed.paths, per_task=files_per_task(listed))

    def records(self, batch: pd.DataFrame) -> Split:
        """JSON Lines files (``bytes``) → one row per event; non-UTF-8, malformed and keyless lines rejected."""
        events, keys, reasons, bad = [], [], [], []
        for data in batch["bytes"]:
            for raw in bytes(data).split(b"\n"):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    reasons.append("not UTF-8 text")
                    bad.append(raw.decode("utf-8", errors="replace"))
                    continue
                if not line.strip():
                    continue
                event, reason = parse_event_line(line, self.key)
                if reason is None:
                    events.append(event)
                    keys.append(key_text(event[self.key]))
                else:
                    reasons.append(reason)
                    bad.append(line)
        good = pd.DataFrame(self.record_matrix(events), columns=self.record_columns())
        good.insert(0, self.key, pd.Series(keys, dtype=object))
        return good, reject_frame(self.name, reasons, bad)

    def entities(self, records: pd.DataFrame) -> Split:
        keys, groups = entity_groups(records[self.key])
        flat = records[self.record_columns()].to_numpy(np.float64)
        return self.entity_frame(keys, self.entity_columns(groups, flat)), empty_rejects()

    # -- online ---------------------------------------------------------------------
    def online(self, instances: list[dict]) -> Columns:
        events, rows = self.items(instances, expect(dict, "expected a JSON object"))
        flat = self.record_matrix(events)
        return self.per_instance(rows, len(instances), lambda groups: self.entity_columns(groups, flat))

    def request_fields(self) -> dict[str, tuple]:
        from typing import Optional

        return {self.name: (Optional[JsonObjects], Field(default=None, description=f"{self.name}: nested JSON events of this entity"))}


__all__ = ["EventsSource", "EventsSettings", "parse_event_line"]
