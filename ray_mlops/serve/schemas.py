"""Request and response bodies of the HTTP API, built from the configured sources.

A raw record (one element of ``instances``) has one field per column of the table
sources (except the label), an optional entity key, and one field per multi-record
source: ``list[object]`` for nested JSON events, ``list[str]`` (or one string) for text
and base64 PNG images, ``list[reading]`` for time series. A user's own dataset therefore
gets its own schema, shown in ``/openapi.json``. Types, finiteness and sizes are checked
here; values (ranges, levels, image decoding) are checked by the shared featurizers.

The ``/predict`` body and its records are ``TypedDict`` schemas validated by pydantic:
a validated request is plain dicts, ready for the featurizers, with no model object
per record and no ``model_dump`` (for 100 records that was most of the parsing time).

>>> from pydantic import TypeAdapter
>>> from ray_mlops.config import load_config
>>> models = request_models(load_config())
>>> list(models.instance_fields)[:4]
['machine_id', 'model', 'site', 'age_years']
>>> TypeAdapter(models.predict).validate_python({"instances": []})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for PredictRequest
...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, Field, PlainValidator, WithJsonSchema, create_model

from ray_mlops.config import Config
from ray_mlops.data.sources import sources_of
from ray_mlops.data.sources._request import FORBID, INT64, FiniteFloat, Int64, typed_record


def _class_label(value: Any) -> Any:
    """An int or a non-empty string, as sent: never coerced (``True``, ``1.0``, ``"1"`` stay what they are)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= INT64:
        return value
    if isinstance(value, str) and 0 < len(value) <= 1024:
        return value
    raise ValueError(f"a class label is an integer or a non-empty string (at most 1024 characters), "
                     f"got {type(value).__name__} {str(value)[:40]!r}")


#: A classification label as sent back to ``/feedback`` (the route then checks it is one of
#: the serving model's classes).
ClassLabel = Annotated[Union[int, str], PlainValidator(_class_label),
                       WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 1}]})]


def instance_fields(config: Config) -> dict[str, tuple]:
    """The field definitions of one raw record: the entity key, then each source type's fields."""
    fields: dict[str, Any] = {
        config.data.entity_key: (Optional[Union[Annotated[str, Field(max_length=256)], Int64]],
                                 Field(default=None, description="entity id (logged, not a feature)")),
    }
    for source in sources_of(config):
        fields.update(source.request_fields())
    return fields


def instance_model(config: Config) -> type:
    """The schema of one raw record (a ``TypedDict``: validated records are plain dicts)."""
    return typed_record("Instance", instance_fields(config))


@dataclass(frozen=True)
class RequestModels:
    """The request schemas of one configuration: ``predict`` and ``instance`` are ``TypedDict`` types."""

    instance: type
    predict: type
    feedback: type[BaseModel]
    instance_fields: tuple[str, ...] = ()


def request_models(config: Config) -> RequestModels:
    """Build the request schemas for ``config`` (limits from ``config.serve``)."""
    fields = instance_fields(config)
    instance = typed_record("Instance", fields)
    limit = config.serve.max_instances
    predict = typed_record("PredictRequest", {
        "instances": (Annotated[list[instance], Field(min_length=1, max_length=limit)], ...),  # type: ignore[valid-type]
    })
    label = ClassLabel if config.data.task == "classification" else FiniteFloat
    feedback = create_model(
        "FeedbackRequest", __config__=FORBID,
        request_id=(Annotated[str, Field(min_length=1, max_length=256)], ...),
        labels=(Annotated[list[label], Field(min_length=1, max_length=limit)], ...),  # type: ignore[valid-type]
    )
    return RequestModels(instance, predict, feedback, tuple(fields))


class PredictResponse(BaseModel):
    predictions: list[Union[int, float, str]] = Field(
        description="class labels (ints or strings, as GET /model's classes); values for regression")
    probabilities: Optional[list[list[float]]] = Field(
        description="one list per instance, in the order of GET /model's classes; null for regression")
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
    shadow: Optional[dict[str, Any]] = None


class ErrorResponse(BaseModel):
    detail: str
    field: Optional[str] = None


__all__ = [
    "RequestModels",
    "request_models",
    "instance_model",
    "instance_fields",
    "PredictResponse",
    "FeedbackResponse",
    "HealthResponse",
    "ErrorResponse",
]
