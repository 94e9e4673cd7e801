"""Patience and cooldown over a stream of window verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ray_mlops.monitor._results import DriftReport

__all__ = ["DriftStream", "StreamVerdict"]


@dataclass(frozen=True)
class StreamVerdict:
    """One window's entry in a :class:`DriftStream` history."""

    index: int
    drift: bool
    alarm: bool
    p_value: float
    streak: int
    cooling_down: bool
    drifted_features: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_features"] = list(self.drifted_features)
        return out


class DriftStream:
    """Patience and cooldown over a stream of window verdicts.

    An alarm is raised when ``patience`` consecutive windows drift; the ``cooldown``
    windows after an alarm are recorded but cannot raise another (retraining is under
    way), and the streak restarts after them. ``detector`` is anything with
    ``test(window) -> DriftReport``; :meth:`observe` takes a report directly.
    The state (counters and the last ``max_history`` verdicts) round-trips through a
    plain dict with :meth:`to_state` / :meth:`from_state`, so an actor can checkpoint it.

    Example:
        >>> stream = DriftStream(None, patience=2, cooldown=1)
        >>> flags = [True, True, True, True, True]
        >>> [stream.observe(DriftReport(f, 0.0, {})).alarm for f in flags]
        [False, True, False, False, True]
    """

    def __init__(self, detector: Any, *, patience: int = 3, cooldown: int = 0,
                 max_history: int = 1000) -> None:
        for name, value, low in (("patience", patience, 1), ("cooldown", cooldown, 0),
                                 ("max_history", max_history, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.detector = detector
        self.patience, self.cooldown, self.max_history = patience, cooldown, max_history
        self.windows_seen = 0
        self.streak = 0
        self.cooldown_left = 0
        self.history: list[StreamVerdict] = []

    @property
    def drift_detected(self) -> bool:
        """Whether the last window raised an alarm."""
        return bool(self.history) and self.history[-1].alarm

    @property
    def alarms(self) -> list[int]:
        """Indices of the windows (in the kept history) that raised an alarm."""
        return [v.index for v in self.history if v.alarm]

    def update(self, window: Any) -> StreamVerdict:
        """Test ``window`` with the detector and record the verdict."""
        if self.detector is None:
            raise ValueError("detector is None: use observe(report) or pass a detector")
        return self.observe(self.detector.test(window))

    def observe(self, report: DriftReport) -> StreamVerdict:
        """Record a report computed elsewhere and apply patience and cooldown."""
        cooling = self.cooldown_left > 0
        alarm = False
        if cooling:
            self.cooldown_left -= 1
            self.streak = 0
        else:
            self.streak = self.streak + 1 if report.drift else 0
            alarm = self.streak >= self.patience
        verdict = StreamVerdict(self.windows_seen, bool(report.drift), alarm,
                                float(report.p_value), self.streak, cooling,
                                tuple(report.drifted_features))
        if alarm:
            self.streak, self.cooldown_left = 0, self.cooldown
        self.windows_seen += 1
        self.history = (self.history + [verdict])[-self.max_history:]
        return verdict

    def to_state(self) -> dict[str, Any]:
        """Counters, options and history as a plain (JSON-serializable) dict."""
        return {"patience": self.patience, "cooldown": self.cooldown,
                "max_history": self.max_history, "windows_seen": self.windows_seen,
                "streak": self.streak, "cooldown_left": self.cooldown_left,
                "history": [v.to_dict() for v in self.history]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], detector: Any = None) -> DriftStream:
        """Resume from :meth:`to_state` output (the detector is rebuilt by the caller)."""
        stream = cls(detector, patience=state["patience"], cooldown=state["cooldown"],
                     max_history=state["max_history"])
        stream.windows_seen = int(state["windows_seen"])
        stream.streak = int(state["streak"])
        stream.cooldown_left = int(state["cooldown_left"])
        stream.history = [StreamVerdict(**{**v, "drifted_features": tuple(v["drifted_features"])})
                          for v in state["history"]]
        return stream
