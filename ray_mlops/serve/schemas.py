"""Request and response bodies of the HTTP API, built from the configured sources.

A raw record (one element of ``instances``) has one field per column of the table
sources (except the label), an optional entity key, and one field per multi-record
source: ``list[object]`` for nested JSON events, ``list[str]`` (or one string) for text
and base64 PNG images, ``list[reading]`` for time series. A user's own dataset therefore
gets its own schema, shown in ``/openapi.json``. Types, finiteness and sizes are checked
here; values (ranges, levels, image decoding) are checked by the shared featurizers.

>>> from ray_mlops.config import load_config
>>> models = request_models(load_config())
>>> sorted(models.instance.model_fields)[:4]
['age_years', 'events', 'firmware', 'images']
>>> models.predict.model_validate({"instances": []})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for PredictRequest
...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from ray_mlops.config import (
    ColumnSpec,
    Config,
    EventsSource,
    ImageSource,
    TableSource,
    TextSource,
    TimeseriesSource,
)

MAX_ITEMS_PER_FIELD = 1000        # events / notes / images / readings per instance
MAX_STRING = 1_000_000            # characters in one string (a note, a base64 image)
MAX_NESTING = 16                  # depth of a nested JSON event
INT64 = 2**63 - 1

_FORBID = ConfigDict(extra="forbid")
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Int64 = Annotated[int, Field(strict=True, ge=-INT64, le=INT64)]
Text = Annotated[str, Field(strict=True, max_length=MAX_STRING)]


def _check_json(value: Any, depth: int = 0) -> Any:
    """Reject NaN/inf and too-deep nesting anywhere inside a nested JSON value."""
    if depth > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64:
        raise ValueError("integer out of the 64-bit range")
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise ValueError(f"string longer than {MAX_STRING} characters")
    if isinstance(value, dict):
        for item in value.values():
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
    return value


def _column_type(spec: ColumnSpec) -> Any:
    if spec.type == "float":
        return FiniteFloat
    if spec.type == "int":
        return Int64
    if spec.type == "bool":
        return Annotated[bool, Field(strict=True)]
    if spec.levels:
        return Literal[tuple(spec.levels)]  # type: ignore[valid-type]
    return Annotated[str, Field(strict=True, max_length=1024)]


def _table_fields(source: TableSource, label: str) -> dict[str, tuple]:
    fields = {}
    for name, spec in source.columns.items():
        if name == label:
            continue
        kind = _column_type(spec)
        fields[name] = (kind, ...) if spec.required else (Optional[kind], None)
    return fields


def _reading_model(source: TimeseriesSource) -> type[BaseModel]:
    fields: dict[str, Any] = {signal: (FiniteFloat, ...) for signal in source.signals}
    fields[source.time_column] = (Optional[Union[Text, FiniteFloat]], None)
    return create_model(f"{source.name.title()}Reading", __config__=_FORBID, **fields)


def _many(item: Any, description: str) -> tuple:
    listed = Annotated[list[item], Field(max_length=MAX_ITEMS_PER_FIELD)]
    return (Optional[Union[listed, item]], Field(default=None, description=description))


def _source_field(source: Any) -> tuple | None:
    if isinstance(source, EventsSource):
        return (Optional[Annotated[list[dict[str, Any]], Field(max_length=MAX_ITEMS_PER_FIELD)]],
                Field(default=None, description=f"{source.name}: nested JSON events of this entity"))
    if isinstance(source, TextSource):
        return _many(Text, f"{source.name}: free-text notes")
    if isinstance(source, ImageSource):
        return _many(Text, f"{source.name}: base64-encoded PNG images")
    if isinstance(source, TimeseriesSource):
        reading = _reading_model(source)
        return (Optional[Annotated[list[reading], Field(max_length=MAX_ITEMS_PER_FIELD)]],  # type: ignore[valid-type]
                Field(default=None, description=f"{source.name}: recent readings, oldest first"))
    return None


def instance_model(config: Config) -> type[BaseModel]:
    """The pydantic model of one raw record for ``config``'s sources."""
    fields: dict[str, Any] = {
        config.data.entity_key: (Optional[Union[Annotated[str, Field(max_length=256)], Int64]],
                                 Field(default=None, description="entity id (logged, not a feature)")),
    }
    json_fields = []
    for source in config.data.sources:
        if isinstance(source, TableSource):
            fields.update(_table_fields(source, config.data.label))
            continue
        fields[source.name] = _source_field(source)
        if isinstance(source, EventsSource):
            json_fields.append(source.name)
    validators = {}
    if json_fields:
        validators["_finite_json"] = field_validator(*json_fields)(classmethod(lambda cls, v: _check_json(v)))
    return create_model("Instance", __config__=_FORBID, __validators__=validators, **fields)


@dataclass(frozen=True)
class RequestModels:
    """The request and response models of one configuration."""

    instance: type[BaseModel]
    predict: type[BaseModel]
    feedback: type[BaseModel]


def request_models(config: Config) -> RequestModels:
    """Build the request models for ``config`` (limits from ``config.serve``)."""
    instance = instance_model(config)
    limit = config.serve.max_instances
    predict = create_model(
        "PredictRequest", __config__=_FORBID,
        instances=(Annotated[list[instance], Field(min_length=1, max_length=limit)], ...),  # type: ignore[valid-type]
    )
    label = Int64 if config.data.task == "classification" else FiniteFloat
    feedback = create_model(
        "FeedbackRequest", __config__=_FORBID,
        request_id=(Annotated[str, Field(min_length=1, max_length=256)], ...),
        labels=(Annotated[list[label], Field(min_length=1, max_length=limit)], ...),  # type: ignore[valid-type]
    )
    return RequestModels(instance, predict, feedback)


class PredictResponse(BaseModel):
    predictions: list[Union[int, float, str]]
    probabilities: Optional[list[list[float]]] = Field(
        description="per-class probabilities (classes in the model's order); null for regression")
    model_version: str
    request_id: str


class FeedbackResponse(BaseModel):
    request_id: str
    accepted: int
    model_version: str


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    model_version: str
    replica: str
    last_swap_error: Optional[dict[str, Any]] = None
    prediction_log: dict[str, int]


class ErrorResponse(BaseModel):
    detail: str
    field: Optional[str] = None


__all__ = [
    "RequestModels",
    "request_models",
    "instance_model",
    "PredictResponse",
    "FeedbackResponse",
    "HealthResponse",
    "ErrorResponse",
]
