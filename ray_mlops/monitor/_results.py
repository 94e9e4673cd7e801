"""The fixed-shape results of a drift test: one feature's verdict, one window's report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DriftReport", "FeatureResult"]


@dataclass(frozen=True)
class FeatureResult:
    """The verdict on one feature in one window.

    ``test``, ``statistic`` and ``p_value`` describe the distribution test (raw, not
    corrected); ``missing_p_value`` the missing-share test (``None`` when no value is
    missing in reference or window); ``point_mass_p_value`` the point-mass test of a
    numeric feature (has one value become far more frequent, e.g. a knocked-out
    feature stuck at a default; ``None`` when no value repeats in reference and window
    together, or the detector has ``point_mass=False``). ``drift`` is whether any of
    the feature's tests is rejected after the detector's correction;
    ``adjusted_p_value`` is the smallest corrected p-value among them. When the window has no non-missing value the distribution test
    is ``"<test> (no values)"`` with ``p_value = 1.0``: the missing-share test decides.
    ``exact`` is False when a large-sample KS p-value is the asymptotic one (Stephens),
    reported because it is far from the decision threshold (see ``_ks``); the decision
    is then the one scipy's exact p-value gives.
    """

    test: str
    statistic: float
    p_value: float
    drift: bool
    adjusted_p_value: float = 1.0
    effect_size: float = float("nan")
    effect_metric: str = ""
    missing_p_value: float | None = None
    missing_share_reference: float = 0.0
    missing_share_window: float = 0.0
    n_reference: int = 0
    n_window: int = 0
    exact: bool = True
    point_mass_p_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    """Fixed-shape result of one test: window verdict, family p-value, per feature.

    ``multivariate`` is the Mahalanobis-score test across the numeric features (``None``
    when the detector has none) and ``outputs`` the tests of the model's outputs (empty
    without a model); their ``adjusted_p_value`` and ``drift`` are on the same scale as
    the features', so ``drift`` is True iff some feature, the multivariate test or an
    output is flagged.
    """

    drift: bool
    p_value: float
    features: dict[str, FeatureResult]
    alpha: float = 0.05
    correction: str = "bonferroni"
    combine: str | None = None
    n_tests: int = 0
    n_window: int = 0
    multivariate: FeatureResult | None = None
    outputs: dict[str, FeatureResult] = field(default_factory=dict)

    @property
    def drifted_features(self) -> list[str]:
        """Names of the features flagged after correction."""
        return [name for name, res in self.features.items() if res.drift]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (``DriftReport.from_dict`` reverses it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        """Rebuild a report from :meth:`to_dict` output."""
        feats = {k: FeatureResult(**v) for k, v in data["features"].items()}
        outputs = {k: FeatureResult(**v) for k, v in (data.get("outputs") or {}).items()}
        multi = data.get("multivariate")
        return cls(**{**data, "features": feats, "outputs": outputs,
                      "multivariate": None if multi is None else FeatureResult(**multi)})
