"""Source types, one module each, found by their ``format``.

>>> sorted(formats())
['csv', 'image', 'jsonl', 'parquet', 'text', 'timeseries']
>>> source_type("csv").__name__
'TableSource'

A new format is one module with a :class:`SourceType` subclass and a call to
:func:`register_source` (see README, "Adding a source type").
"""

from __future__ import annotations

from ray_mlops.config import Config, DataConfig, SourceSettings
from ray_mlops.data.sources.base import (
    DEFAULT_FILENAME_PATTERN,
    FeatureKind,
    MultiRecordSource,
    RecordError,
    SourceType,
    feature_name,
)

_REGISTRY: dict[str, type[SourceType]] = {}


def register_source(cls: type[SourceType]) -> type[SourceType]:
    """Make ``cls`` the source type of each of its ``formats`` (usable as a class decorator)."""
    for fmt in cls.formats:
        _REGISTRY[fmt] = cls
    return cls


def source_type(fmt: object) -> type[SourceType] | None:
    """The source type registered for ``fmt``, or None."""
    return _REGISTRY.get(fmt) if isinstance(fmt, str) else None


def formats() -> list[str]:
    """Every registered format."""
    return sorted(_REGISTRY)


def build_source(settings: SourceSettings, data: DataConfig) -> SourceType:
    """The source type instance for one configured source."""
    cls = source_type(settings.format)
    if cls is None:
        raise KeyError(f"no source type for format {settings.format!r}")
    return cls(settings, data)


_BUILT: dict[int, tuple[DataConfig, list[SourceType]]] = {}


def sources_of(config: Config | DataConfig) -> list[SourceType]:
    """The source type instances of a config's sources, in config order (built once per config object)."""
    data = config.data if isinstance(config, Config) else config
    cached = _BUILT.get(id(data))
    if cached is None or cached[0] is not data:
        if len(_BUILT) > 32:
            _BUILT.clear()
        cached = (data, [build_source(s, data) for s in data.sources])
        _BUILT[id(data)] = cached
    return cached[1]


def _register_builtins() -> None:
    from ray_mlops.data.sources.events import EventsSource
    from ray_mlops.data.sources.image import ImageSource
    from ray_mlops.data.sources.table import TableSource
    from ray_mlops.data.sources.text import TextSource
    from ray_mlops.data.sources.timeseries import TimeseriesSource

    for cls in (TableSource, EventsSource, TextSource, ImageSource, TimeseriesSource):
        register_source(cls)


_register_builtins()

__all__ = [
    "DEFAULT_FILENAME_PATTERN",
    "FeatureKind",
    "MultiRecordSource",
    "RecordError",
    "SourceType",
    "build_source",
    "feature_name",
    "formats",
    "register_source",
    "source_type",
    "sources_of",
]
