"""Pydantic field types the source types use in the HTTP request schema, and their limits."""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional, Union

from pydantic import AfterValidator, ConfigDict, Field
from pydantic.fields import FieldInfo
from typing_extensions import NotRequired, TypedDict

MAX_ITEMS_PER_FIELD = 1000        # events / notes / images / readings per instance
MAX_STRING = 1_000_000            # characters in one string (a note, a base64 image)
MAX_NESTING = 16                  # depth of a nested JSON event
INT64 = 2**63 - 1

FORBID = ConfigDict(extra="forbid")
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Int64 = Annotated[int, Field(strict=True, ge=-INT64, le=INT64)]
Text = Annotated[str, Field(strict=True, max_length=MAX_STRING)]


def check_json(value: Any, depth: int = 0) -> Any:
    """Reject NaN/inf, out-of-range integers, huge strings and too-deep nesting anywhere inside a JSON value."""
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
            check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json(item, depth + 1)
    return value


JsonObjects = Annotated[list[dict[str, Any]], Field(max_length=MAX_ITEMS_PER_FIELD), AfterValidator(check_json)]


def typed_record(name: str, fields: dict[str, tuple]) -> type:
    """A ``TypedDict`` (unknown keys refused) of ``pydantic.create_model``-style field definitions.

    Pydantic validates into plain dicts, so a validated request reaches the featurizers
    without a model object per record (nor a ``model_dump``); absent optional fields are
    filled with their default.

    >>> from pydantic import TypeAdapter
    >>> Reading = typed_record("Reading", {"t": (FiniteFloat, ...), "note": (Optional[str], None)})
    >>> TypeAdapter(Reading).validate_python({"t": 1.5})
    {'t': 1.5, 'note': None}
    """
    annotations = {}
    for field, (kind, default) in fields.items():
        info = default if isinstance(default, FieldInfo) else None if default is ... else Field(default=default)
        annotated = kind if info is None else Annotated[kind, info]
        required = default is ... or (info is not None and info.is_required())
        annotations[field] = annotated if required else NotRequired[annotated]
    record = TypedDict(name, annotations)  # type: ignore[misc]
    record.__pydantic_config__ = FORBID  # type: ignore[attr-defined]
    return record


def many(item: Any, description: str) -> tuple:
    """An optional field holding a list of ``item`` (or one ``item``)."""
    listed = Annotated[list[item], Field(max_length=MAX_ITEMS_PER_FIELD)]
    return (Optional[Union[listed, item]], Field(default=None, description=description))


__all__ = ["FORBID", "FiniteFloat", "Int64", "JsonObjects", "Text", "check_json", "many", "typed_record", "MAX_ITEMS_PER_FIELD"]
