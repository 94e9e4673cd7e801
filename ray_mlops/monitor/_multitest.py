"""Multiple-testing corrections and p-value combinations for a family of tests.

Corrections (per-test adjusted p-values; the family value is the smallest of them):

* ``bonferroni`` — ``min(1, k p)``: family-wise error ≤ α under any dependence.
* ``bh`` — Benjamini–Hochberg step-up, α read as the false discovery rate. Under the
  global null its family value is Simes' p-value, so false alarms stay ≤ α for
  independent or positively dependent tests.
* ``none`` — raw p-values. Each test is calibrated, the window verdict is *not*
  (k tests at α fire on up to ``1 - (1 - α)^k`` of unchanged windows).

Combinations (one family p-value, more power when many features move a little):

* ``fisher`` — ``-2 Σ log p ~ χ²(2k)``; exact for independent continuous tests,
  conservative for discrete ones, anti-conservative when features are correlated.
* ``cauchy`` — Liu & Xie's Cauchy combination ``mean(tan((½ - p)π))``; close to
  calibrated at small α under arbitrary dependence.
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["COMBINATIONS", "CORRECTIONS", "adjust", "combine", "family_p_value"]

CORRECTIONS = ("bonferroni", "bh", "none")
COMBINATIONS = ("fisher", "cauchy")


def adjust(p: np.ndarray, correction: str) -> np.ndarray:
    """Adjusted p-values: test i is rejected at level α iff ``adjusted[i] <= α``."""
    p = np.asarray(p, dtype=float)
    k = len(p)
    if correction == "none" or k == 0:
        return p.copy()
    if correction == "bonferroni":
        return np.minimum(1.0, p * k)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * k / np.arange(1, k + 1)
    stepped = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(k)
    out[order] = np.minimum(1.0, stepped)
    return out


def combine(p: np.ndarray, method: str) -> float:
    """One p-value for the global null "no test in the family is off"."""
    p = np.asarray(p, dtype=float)
    if len(p) == 0:
        return 1.0
    if method == "fisher":
        with np.errstate(divide="ignore"):
            stat = -2.0 * np.log(p).sum()
        return float(special.chdtrc(2 * len(p), stat))
    with np.errstate(divide="ignore"):
        t = np.mean(1.0 / np.tan(np.pi * p))  # tan((1/2 - p)π), accurate for tiny p
    return float(np.clip(0.5 - np.arctan(t) / np.pi, 0.0, 1.0))


def family_p_value(p: np.ndarray, correction: str, combination: str | None) -> float:
    """The family-wise p-value: the combination if one is set, else the smallest
    adjusted p-value (Bonferroni's ``k·min p``, Simes' for ``bh``, ``min p`` for none)."""
    if combination is not None:
        return combine(p, combination)
    return float(adjust(p, correction).min()) if len(p) else 1.0
