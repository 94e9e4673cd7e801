"""Plain records of the monitor's state: frozen dataclasses that read and write themselves as JSON dicts.

A record is what the monitor keeps and shows of one thing (a window's verdict, a retraining
job or its outcome, a probation, a shadow trial): typed fields, built in one place,
written as a plain dict (:meth:`Record.to_dict`: the checkpoint, ``--json``, the HTML
report) and read back from one (:meth:`Record.from_dict`) — keys a record does not know
are ignored and fields an older checkpoint lacks take their defaults, so old checkpoints
still load.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Point(Record):
...     x: int
...     y: int = 0
>>> Point.from_dict({"x": 1, "z": 3}), Point(2, 3).to_dict()
(Point(x=1, y=0), {'x': 2, 'y': 3})
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="Record")


class Record:
    """Mixin of a frozen dataclass kept in the monitor's state (see the module docstring).

    ``nested`` names the fields that hold another record (read back with its ``from_dict``).
    """

    nested: ClassVar[dict[str, type["Record"]]] = {}

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain (JSON-ready) dict."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[R], raw: dict[str, Any]) -> R:
        """Read a record written by :meth:`to_dict` (or by an older version of it)."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        values = {k: v for k, v in raw.items() if k in known}
        for name, kind in cls.nested.items():
            if isinstance(values.get(name), dict):
                values[name] = kind.from_dict(values[name])
        return cls(**values)


def optional(kind: type[R], raw: dict[str, Any] | None) -> R | None:
    """``kind.from_dict(raw)``, or None for None."""
    return None if raw is None else kind.from_dict(raw)


def dump_book(active: Record | None, history: list) -> dict[str, Any]:
    """A book's running entry and ended ones in the checkpoint's layout (``active``, ``history``)."""
    return {"active": None if active is None else active.to_dict(), "history": [h.to_dict() for h in history]}


def load_book(active: type[R], ended: type[Record], raw: dict[str, Any]) -> tuple[R | None, list]:
    """The running entry and the ended ones of a book written by :func:`dump_book`."""
    return optional(active, raw.get("active")), [ended.from_dict(h) for h in raw.get("history", [])]


__all__ = ["Record", "optional", "dump_book", "load_book"]
