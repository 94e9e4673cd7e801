"""The per-feature part of a window's family: a distribution test per feature (KS for
numeric, chi-squared / Fisher for categorical) and a missing-share test for each feature
with a missing value, corrected together (``_multitest``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ray_mlops.monitor import _multitest
from ray_mlops.monitor._categorical import (CategoricalReference, jensen_shannon_many,
                                             table_test, table_tests)
from ray_mlops.monitor._columns import CATEGORICAL, NUMERIC, holds_strings
from ray_mlops.monitor._ks import Located, NumericComparison, NumericReference
from ray_mlops.monitor._pointmass import PointMassReference
from ray_mlops.monitor._results import FeatureResult

__all__ = ["FeatureTests", "FeatureVerdicts", "Level"]


@dataclass(frozen=True)
class Level:
    """How one part of the family is decided: its level is ``share · alpha``."""

    alpha: float
    correction: str
    combine: str | None
    share: float
    banded: bool  # KS p-values exact only near the threshold (see ``_ks``)
    point_mass_share: float = 0.0  # the point-mass tests' own part (Bonferroni in it)

    def threshold(self, n_tests: int) -> float | None:
        """The raw p-value at or below which one of ``n_tests`` is rejected; None when
        every exact p-value is needed (exact mode, BH, combinations)."""
        if not self.banded or self.combine is not None or self.correction == "bh":
            return None
        level = self.alpha * self.share
        return level / max(n_tests, 1) if self.correction == "bonferroni" else level


@dataclass
class _Test:
    """One hypothesis of the family, before correction."""

    feature: str
    kind: str  # "distribution", "missing" or "point_mass"
    p_value: float


@dataclass
class _Partial:
    """Per-feature numbers gathered before the correction is applied."""

    test: str
    statistic: float
    p_value: float
    effect_size: float
    effect_metric: str
    n_reference: int
    n_window: int
    active: bool
    missing_p_value: float | None = None
    missing_share_reference: float = 0.0
    missing_share_window: float = 0.0
    adjusted: list[float] = field(default_factory=list)
    exact: bool = True
    point_mass_p_value: float | None = None

    def tests(self, name: str) -> list[_Test]:
        """This feature's hypotheses in the family (a test without data is left out)."""
        tests = [_Test(name, "distribution", self.p_value)] if self.active else []
        if self.missing_p_value is not None:
            tests.append(_Test(name, "missing", self.missing_p_value))
        if self.point_mass_p_value is not None:
            tests.append(_Test(name, "point_mass", self.point_mass_p_value))
        return tests

    def result(self, alpha: float) -> FeatureResult:
        adjusted = min(self.adjusted, default=1.0)  # flags follow `correction` always
        return FeatureResult(
            test=self.test, statistic=self.statistic, p_value=self.p_value,
            drift=bool(adjusted <= alpha), adjusted_p_value=adjusted,
            effect_size=self.effect_size, effect_metric=self.effect_metric,
            missing_p_value=self.missing_p_value,
            missing_share_reference=self.missing_share_reference,
            missing_share_window=self.missing_share_window,
            n_reference=self.n_reference, n_window=self.n_window, exact=self.exact,
            point_mass_p_value=self.point_mass_p_value)


@dataclass(frozen=True)
class FeatureVerdicts:
    """The per-feature part's outcome: results, its p-value on the window's scale
    (divided by its share), and the number of tests in it."""

    features: dict[str, FeatureResult]
    p_value: float
    n_tests: int


def _numeric_part(res: NumericComparison, i: int, point_mass: float | None) -> _Partial:
    has = bool(res.n_window[i] > 0)
    return _Partial(
        test="ks" if has else "ks (no values)",
        statistic=float(res.statistic[i]) if has else 0.0,
        p_value=float(res.p_value[i]) if has else 1.0,
        effect_size=float(res.wasserstein[i]), effect_metric="wasserstein",
        n_reference=int(res.n_reference[i]), n_window=int(res.n_window[i]), active=has,
        exact=bool(res.exact[i]), point_mass_p_value=point_mass)


def _level_counts(ref: CategoricalReference, name: str,
                  values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(reference counts, window counts) on aligned levels; ValueError if the type changed."""
    ref_counts, win_counts, levels = ref.window_counts(values.array)
    strings = holds_strings(levels)
    if strings is not None and strings != ref.string_levels:
        raise ValueError(f"column {name!r} changed type: reference levels are "
                         f"{'strings' if ref.string_levels else 'not strings'}, "
                         f"window has {values.dtype}")
    return ref_counts, win_counts


def _categorical_parts(refs: dict[str, CategoricalReference],
                       window: pd.DataFrame) -> dict[str, _Partial]:
    """The chi-squared / Fisher test of every categorical feature (computed together)."""
    counts = {name: _level_counts(ref, name, window[name]) for name, ref in refs.items()}
    tested = [name for name, (_, win) in counts.items() if win.sum() > 0]
    pairs = [counts[name] for name in tested]
    results = dict(zip(tested, zip(table_tests(pairs), jensen_shannon_many(pairs).tolist())))
    parts = {}
    for name, (ref_counts, win_counts) in counts.items():
        if name not in results:
            parts[name] = _Partial("chi2 (no values)", 0.0, 1.0, float("nan"), "jensen_shannon",
                                   int(ref_counts.sum()), 0, active=False)
            continue
        res, js = results[name]
        parts[name] = _Partial(res.test, res.statistic, res.p_value, js, "jensen_shannon",
                               int(ref_counts.sum()), int(win_counts.sum()),
                               active=res.table.shape[1] > 1)
    return parts


class FeatureTests:
    """The reference side of the per-feature tests: sorted numeric columns, level
    counts of the categorical ones, the missing count of each."""

    def __init__(self, reference: pd.DataFrame, kinds: dict[str, str], matrix: np.ndarray,
                 missing: dict[str, int], point_mass: bool = True) -> None:
        self.columns = list(reference.columns)
        self.numeric_names = [c for c in self.columns if kinds[c] == NUMERIC]
        self.categorical_names = [c for c in self.columns if kinds[c] == CATEGORICAL]
        self.numeric = NumericReference(matrix)
        self.point_mass = PointMassReference(self.numeric.sorted) if point_mass else None
        self.categorical = {c: CategoricalReference(reference[c]) for c in self.categorical_names}
        self.missing = missing
        self.n_reference = len(reference)

    def test(self, window: pd.DataFrame, located: Located, level: Level) -> FeatureVerdicts:
        """Test every feature of ``window`` (``located``: its numeric columns in the
        reference, from ``self.numeric.locate``) and correct the family at ``level``."""
        parts = _categorical_parts(self.categorical, window)
        win_missing = dict(zip(self.numeric_names,
                               (len(window) - located.n_window).tolist()))
        win_missing.update({c: len(window) - p.n_window for c, p in parts.items()})
        point_mass = (self.point_mass.p_values(located) if self.point_mass is not None
                      else [None] * len(self.numeric_names))
        threshold = level.threshold(self._count_tests(located, parts, win_missing))
        res = self.numeric.compare(located, None if threshold is None else
                                   np.full(len(self.numeric_names), threshold))
        parts.update({name: _numeric_part(res, i, point_mass[i])
                      for i, name in enumerate(self.numeric_names)})
        self._add_missing_tests(win_missing, len(window), parts)
        tests = [t for name in self.columns for t in parts[name].tests(name)]
        return self._correct(parts, tests, level)

    def _correct(self, parts: dict[str, _Partial], tests: list[_Test],
                 level: Level) -> FeatureVerdicts:
        """Adjusted p-values: the distribution and missing-share tests by ``correction``
        at ``share``, the point-mass tests by Bonferroni at ``point_mass_share``."""
        inputs = [t for t in tests if t.kind != "point_mass"]
        masses = [t for t in tests if t.kind == "point_mass"]
        p = np.array([t.p_value for t in inputs])
        adjusted = np.minimum(1.0, _multitest.adjust(p, level.correction) / level.share)
        family_p = _multitest.family_p_value(p, level.correction, level.combine) / level.share
        for t, a in zip(inputs, adjusted):
            parts[t.feature].adjusted.append(float(a))
        for t in masses:
            a = min(1.0, t.p_value * len(masses) / level.point_mass_share)
            parts[t.feature].adjusted.append(a)
            family_p = min(family_p, a)
        features = {name: parts[name].result(level.alpha) for name in self.columns}
        return FeatureVerdicts(features, min(1.0, family_p), len(tests))

    def _count_tests(self, located: Located, categorical: dict[str, _Partial],
                     win_missing: dict[str, int]) -> int:
        """The size of the family, known before any numeric test is run."""
        with_values = int(np.count_nonzero(located.n_window > 0))
        active = sum(part.active for part in categorical.values())
        missing = sum(self.missing[c] + int(win_missing[c]) > 0 for c in self.columns)
        return with_values + active + missing

    def _add_missing_tests(self, win_missing: dict[str, int], n_win: int,
                           parts: dict[str, _Partial]) -> None:
        for name in self.columns:
            ref_m, win_m = self.missing[name], int(win_missing[name])
            part = parts[name]
            part.missing_share_reference = ref_m / self.n_reference
            part.missing_share_window = win_m / n_win
            if ref_m + win_m > 0:
                res = table_test(np.array([self.n_reference - ref_m, ref_m]),
                                 np.array([n_win - win_m, win_m]))
                part.missing_p_value = res.p_value
