"""The window tester: one window of records → its verdict, against production's reference.

:class:`WindowTester` follows the registry's ``production`` alias (its reference is the
production version's profile, :class:`~ray_mlops.monitor.reference.Reference`), attaches
the labels that came back (:class:`~ray_mlops.monitor.store.FeedbackIndex`) and runs the
input, output and accuracy (or error) tests. :func:`verdict_record` turns a tested window
and the drift stream's verdict into the record the monitor stores; :func:`summarize` is
the short form kept in the monitor's state and shown by ``ray-mlops status``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from ray_mlops.config import MonitorConfig
from ray_mlops.data.schema import FeatureSchema
from ray_mlops.errors import RayMlopsError
from ray_mlops.monitor._records import Record
from ray_mlops.monitor.drift import StreamVerdict
from ray_mlops.monitor.reference import Reference, WindowTest
from ray_mlops.monitor.store import FeedbackIndex
from ray_mlops.registry import Registry

log = logging.getLogger(__name__)

TOP_FEATURES = 8


def now_iso(stamp: float | None = None) -> str:
    """An ISO UTC time (now, or of a POSIX ``stamp``)."""
    return datetime.fromtimestamp(time.time() if stamp is None else stamp, timezone.utc).isoformat()


class WindowTester:
    """Tests windows against the production version's reference (None until one is loaded)."""

    def __init__(self, registry: Registry, schema: FeatureSchema, config: MonitorConfig, labels: FeedbackIndex):
        self.registry, self.schema, self.config, self.labels = registry, schema, config, labels
        self.reference: Reference | None = None

    @property
    def version(self) -> str | None:
        """The version whose reference windows are tested against."""
        return None if self.reference is None else self.reference.version

    def load(self, version: str) -> Reference:
        """Test against ``version``'s reference from now on (raises when it cannot be read)."""
        self.reference = Reference.load(self.registry, version, self.schema, self.config)
        return self.reference

    def follow(self, event: Callable[..., None]) -> Reference | None:
        """Load the reference of the version production names now; the new one when it moved."""
        try:
            production = self.registry.get_alias("production")
        except RayMlopsError as exc:
            log.warning("monitor: cannot read the production alias: %s", exc)
            return None
        if production is None or self.version == production:
            return None
        try:
            return self.load(production)
        except (RayMlopsError, ValueError, OSError) as exc:
            event("monitor_reference_failed", version=production, error=str(exc)[:500])
            return None

    def test(self, window: pd.DataFrame) -> WindowTest:
        """The window's tests, with the labels that came back so far (raises on records of a wrong type)."""
        self.labels.refresh()
        return self.reference.test(self.labels.attach(window))


def verdict_record(index: int, window: pd.DataFrame, tested: WindowTest, verdict: StreamVerdict,
                   reference_version: str, tested_at: float) -> dict[str, Any]:
    """Everything about one tested window (stored whole, one file per window)."""
    times = pd.to_datetime(window["time"], utc=True)
    return {"index": index, "start": times.min().isoformat(), "end": times.max().isoformat(),
            "tested_at": now_iso(tested_at), "rows": len(window), "reference_version": reference_version,
            "served_versions": sorted(window["model_version"].astype(str).unique().tolist()),
            "drift": verdict.drift, "alarm": verdict.alarm, "streak": verdict.streak,
            "cooling_down": verdict.cooling_down, "p_value": tested.report.p_value,
            "detectors": tested.parts, "labeled": tested.labeled, "accuracy": tested.accuracy, "mae": tested.error,
            "drifted_features": list(verdict.drifted_features),
            "features": {k: _feature_summary(v) for k, v in tested.report.features.items()}}


@dataclass(frozen=True)
class VerdictSummary(Record):
    """One tested window in short (the monitor's state, ``ray-mlops status``): :func:`verdict_record` but
    its per-feature part, with the ``TOP_FEATURES`` lowest p-values in ``top_features``."""

    index: int
    start: str | None = None
    end: str | None = None
    tested_at: str | None = None
    rows: int = 0
    reference_version: str | None = None
    served_versions: list[str] = field(default_factory=list)
    drift: bool = False
    alarm: bool = False
    streak: int = 0
    cooling_down: bool = False
    p_value: float = 1.0
    detectors: dict[str, float | None] = field(default_factory=dict)  # detector name -> its p-value
    labeled: int = 0
    accuracy: float | None = None
    mae: float | None = None
    drifted_features: list[str] = field(default_factory=list)
    top_features: dict[str, float] = field(default_factory=dict)  # feature name -> its p-value


def summarize(record: dict[str, Any]) -> VerdictSummary:
    """The short form of a stored verdict (:func:`verdict_record`)."""
    ranked = sorted(record["features"].items(), key=lambda kv: kv[1]["p_value"])[:TOP_FEATURES]
    return VerdictSummary.from_dict({**record, "top_features": {name: f["p_value"] for name, f in ranked}})


def _feature_summary(result: Any) -> dict[str, Any]:
    return {"test": result.test, "p_value": result.p_value, "adjusted_p_value": result.adjusted_p_value,
            "drift": result.drift, "effect_size": result.effect_size, "effect_metric": result.effect_metric}


__all__ = ["WindowTester", "VerdictSummary", "verdict_record", "summarize", "now_iso", "TOP_FEATURES"]
