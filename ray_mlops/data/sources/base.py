"""The contract every source type implements, and the helpers they share.

A source type is one :class:`SourceType` subclass in one module of this package. It owns
its format entirely: the config model (``Settings``), the read (Ray Data), the record step
(validate one record, reject with a reason, featurize it), the entity step (an entity's
records → one feature row), the same featurization for one online request, its feature
names and kinds, and its field in the HTTP request schema. Ingestion, the feature schema,
online featurization and the request models only call these members; none of them knows
a format.

Record and entity steps are stateless and deterministic, so a record featurized in a Ray
Data task equals the same record featurized in a Serve replica.
"""

from __future__ import annotations

import functools
import posixpath
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd

from ray_mlops.config import DataConfig, SourceSettings
from ray_mlops.data.grouped import Groups
from ray_mlops.errors import DataError

if TYPE_CHECKING:
    import ray.data

    from ray_mlops.data.fingerprint import SourceFiles

FeatureKind = Literal["numeric", "categorical", "text", "vector"]
Split = tuple[pd.DataFrame, pd.DataFrame]
Columns = dict[str, np.ndarray]

#: ``<entity>.ext`` or ``<entity>_<n>.ext``: how file-per-record sources name their files.
DEFAULT_FILENAME_PATTERN = r"^(?P<key>.+?)(?:_\d+)?\.[A-Za-z0-9]+$"


class RecordError(DataError):
    """A raw record is malformed; ``field`` names where (``instances[0].notes[1]``)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Invalid(Exception):
    """An item of a request is malformed: ``problem``, at ``below`` inside it (``.vibration``; "" for the item)."""

    def __init__(self, problem: str, below: str = ""):
        super().__init__(problem)
        self.problem, self.below = problem, below


def feature_name(source: str, feature: str) -> str:
    """Columns from a multi-record source are prefixed with its name: ``notes__kw_leak``."""
    return f"{source}__{feature}"


def field_path(index: int, *parts: Any) -> str:
    """``instances[2].notes[0]``: where in a request body a value is."""
    path = f"instances[{index}]"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def key_text(value: Any) -> Any:
    """An entity key as text (``3.0`` read from a CSV is the key ``"3"``)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def key_from_path(path: str, pattern: str) -> str | None:
    """The entity key in a file's name, or None when the name does not match ``pattern``."""
    match = re.match(pattern, posixpath.basename(path))
    return match.group("key") if match else None


class SourceType(ABC):
    """One source format. Subclasses set ``formats`` and ``Settings`` and implement the steps."""

    formats: ClassVar[tuple[str, ...]]
    Settings: ClassVar[type[SourceSettings]]

    def __init__(self, settings: SourceSettings, data: DataConfig):
        self.settings = settings
        self.name = settings.name
        self.key = data.entity_key
        self.label = data.label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- what it produces -----------------------------------------------------------
    @abstractmethod
    def features(self) -> dict[str, FeatureKind]:
        """Its feature columns (final names) and kinds, from the config alone."""

    @functools.cached_property
    def names(self) -> list[str]:
        """:meth:`features`' names, in order (computed once: request paths use them)."""
        return list(self.features())

    def column(self, feature: str) -> str:
        """A feature's column name in the table (prefixed with the source's name)."""
        return feature_name(self.name, feature)

    # -- batch ----------------------------------------------------------------------
    @abstractmethod
    def read(self, listed: "SourceFiles") -> "ray.data.Dataset":
        """The raw records of the listed files, as a Ray Data dataset."""

    #: Rows per record-step batch; None: one read task's whole output.
    record_batch_size: ClassVar[int | None] = None

    @abstractmethod
    def records(self, batch: pd.DataFrame) -> Split:
        """Record step: (good records: entity key + record columns, rejects with their reason)."""

    def after_records(self, records: "ray.data.Dataset") -> "ray.data.Dataset":
        """Batch stages after the record step (e.g. an embedding model on an actor pool); none by default."""
        return records

    @abstractmethod
    def entities(self, records: pd.DataFrame) -> Split:
        """Entity step: the records of some entities → (one row each: key + feature columns, rejects)."""

    @abstractmethod
    def accepted(self, entities: pd.DataFrame) -> int:
        """How many records the entity rows were built from."""

    # -- online ---------------------------------------------------------------------
    @abstractmethod
    def online(self, instances: list[dict]) -> Columns:
        """Feature columns of one request's raw records (RecordError naming a bad field)."""

    @abstractmethod
    def request_fields(self) -> dict[str, tuple]:
        """Its fields of the HTTP ``Instance`` model, as ``pydantic.create_model`` definitions."""


class MultiRecordSource(SourceType):
    """A source with several records per entity, reached online through one list field named after it.

    Subclasses give a record matrix per item and an entity aggregation over
    :class:`~ray_mlops.data.grouped.Groups`; this class runs both for batch and online.
    """

    #: The feature counting an entity's records (``n_notes``): what :meth:`accepted` sums.
    count_feature: ClassVar[str]

    def accepted(self, entities: pd.DataFrame) -> int:
        column = self.column(self.count_feature)
        return int(entities[column].sum()) if column in entities else 0

    def entity_frame(self, keys: pd.Index, columns: Columns) -> pd.DataFrame:
        """Entity rows: the key, then every feature column."""
        frame = pd.DataFrame(columns, index=pd.RangeIndex(len(keys)))
        frame.insert(0, self.key, np.asarray(keys, dtype=object))
        return frame

    def items(self, instances: list[dict], parse: Callable[[Any], Any]) -> tuple[list, list[int]]:
        """Every item of this source's request field, parsed, with its instance's row."""
        items, rows = [], []
        for i, record in enumerate(instances):
            for j, item in enumerate(_as_list(record.get(self.name), i, self.name)):
                try:
                    items.append(parse(item))
                except Invalid as exc:
                    raise RecordError(field_path(i, self.name, j) + exc.below, exc.problem) from None
                rows.append(i)
        return items, rows

    def per_instance(self, rows: list[int], n: int, aggregate: Callable[[Groups], Columns]) -> Columns:
        """Entity features of each of ``n`` instances from its items' ``rows``; missing for an instance without items."""
        present, codes = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        names = self.names
        if not len(present):
            return {name: np.full(n, np.nan) for name in names}
        columns = aggregate(Groups.from_codes(codes, len(present)))
        if len(present) == n:  # every instance has items: the rows are the instances
            return {name: columns[name] for name in names}
        return {name: _spread(columns[name], present, n) for name in names}


def _spread(values: Any, present: np.ndarray, n: int) -> np.ndarray:
    """Per-present-instance ``values`` placed at their rows of ``n``; NaN (numbers) or None elsewhere."""
    values = np.asarray(values)
    out = np.full(n, np.nan) if values.dtype.kind == "f" else np.full(n, None, dtype=object)
    out[present] = values
    return out


def _as_list(value: Any, index: int, name: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if not isinstance(value, list):
        raise RecordError(field_path(index, name), "expected a list")
    return value


def expect(kind: type, problem: str) -> Callable[[Any], Any]:
    """A parser that accepts items of ``kind`` and refuses the rest with ``problem``."""

    def parse(item: Any) -> Any:
        if not isinstance(item, kind):
            raise Invalid(problem)
        return item

    return parse


def matrix(rows: list[list[float]], width: int) -> np.ndarray:
    """Rows of numbers as an (N, width) float matrix (also for N = 0)."""
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)


def entity_groups(keys: pd.Series, then: pd.Series | None = None) -> tuple[pd.Index, Groups]:
    """The sorted distinct entity keys of records, and the records grouped by them (ordered by ``then``)."""
    codes, uniques = pd.factorize(keys, sort=True)
    order = None if then is None else then.to_numpy()
    if order is not None and order.dtype == object:  # text (file names): order by rank
        order = pd.factorize(then, sort=True)[0]
    return pd.Index(np.asarray(uniques)), Groups.from_codes(codes, len(uniques), then=order)


def empty_rejects() -> pd.DataFrame:
    from ray_mlops.data.quarantine import REJECT_COLUMNS

    return pd.DataFrame(columns=REJECT_COLUMNS)


__all__ = [
    "DEFAULT_FILENAME_PATTERN",
    "FeatureKind",
    "Invalid",
    "MultiRecordSource",
    "RecordError",
    "SourceType",
    "entity_groups",
    "expect",
    "feature_name",
    "field_path",
    "key_from_path",
    "key_text",
    "matrix",
]
