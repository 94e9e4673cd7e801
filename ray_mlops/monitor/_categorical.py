"""Level counts, pooling and the chi-squared / Fisher tests on ``2 × levels`` tables.

Every table is ``[reference counts, window counts]``.  A chi-squared p-value is computed
with the same float operations as :func:`scipy.stats.chi2_contingency` (Yates'
correction when the table has one degree of freedom), so it equals scipy's.  Columns
are pooled first until Cochran's rule holds (no expected count below 1, at most 20 %
below 5); pooling looks only at column totals (the margins), which keeps the test
calibrated.  A table that
ends 2 × 2 with a small expected count is decided by Fisher's exact test instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import special

__all__ = ["CategoricalReference", "TableTest", "fisher_two_sided", "jensen_shannon",
           "jensen_shannon_many", "table_test", "table_tests"]

#: The textbook minimum expected count for the chi-squared approximation.
MIN_EXPECTED = 5.0


@dataclass(frozen=True)
class TableTest:
    """Result of testing one ``2 × k`` table (after pooling)."""

    test: str
    statistic: float
    p_value: float
    table: np.ndarray


def _expected(table: np.ndarray) -> np.ndarray:
    rows = table.sum(axis=1, keepdims=True)
    cols = table.sum(axis=0, keepdims=True)
    return rows * cols / table.sum()


def chi2_table(table: np.ndarray, expected: np.ndarray | None = None) -> tuple[float, float]:
    """Pearson chi-squared statistic and p-value, identical to ``chi2_contingency``
    (``expected``: the table's expected counts, when already known)."""
    observed = table.astype(float)
    expected = _expected(observed) if expected is None else expected
    dof = observed.shape[1] - 1
    if dof == 1:  # Yates' continuity correction, as scipy applies it
        diff = expected - observed
        observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
    stat = float(((observed - expected) ** 2 / expected).sum())
    return stat, float(special.chdtrc(dof, stat))


def _too_sparse(table: np.ndarray) -> bool:
    """Cochran's rule fails: an expected count below 1, or over 20 % of them below 5."""
    expected = _expected(table.astype(float))
    return expected.min() < 1.0 or (expected < MIN_EXPECTED).mean() > 0.2


def _pool(table: np.ndarray) -> np.ndarray:
    """Pool hopeless columns, then merge the two smallest while Cochran's rule fails.

    Columns are ordered by total count and only totals (margins) are looked at; the
    largest level is never pooled, so two or more levels keep at least two columns.
    A level that is rare but testable (e.g. an unseen level at 4 % of the window)
    keeps its own column.
    """
    n_min = table.sum(axis=1).min()
    total = table.sum()
    cols = table[:, np.argsort(-table.sum(axis=0), kind="stable")]
    hopeless = n_min * cols.sum(axis=0) / total < 1.0
    hopeless[0] = False
    if hopeless.sum() > 1:
        cols = np.column_stack([cols[:, ~hopeless], cols[:, hopeless].sum(axis=1)])
    while cols.shape[1] > 2 and _too_sparse(cols):
        cols = np.column_stack([cols[:, :-2], cols[:, -2:].sum(axis=1)])
        cols = cols[:, np.argsort(-cols.sum(axis=0), kind="stable")]
    return cols


def fisher_two_sided(table: np.ndarray) -> tuple[float, float]:
    """Fisher's exact test on a 2 × 2 table: ``(odds ratio, two-sided p)``.

    Same definition as ``scipy.stats.fisher_exact`` (sum of the hypergeometric
    probabilities not above the observed one), computed on the whole support at once;
    ties are judged with a relative tolerance of 1e-7, as R's ``fisher.test`` does.
    """
    (a, b), (c, d) = table.astype(np.int64)
    if 0 in (a + b, c + d, a + c, b + d):
        return float("nan"), 1.0
    odds = a * d / (c * b) if c > 0 and b > 0 else float("inf")
    row, col, total = a + b, a + c, a + b + c + d
    x = np.arange(max(0, row + col - total), min(row, col) + 1)
    log_pmf = (_log_comb(row, x) + _log_comb(total - row, col - x) - _log_comb(total, col))
    pmf = np.exp(log_pmf - log_pmf.max())
    observed = pmf[a - x[0]]
    p = pmf[pmf <= observed * (1 + 1e-7)].sum() / pmf.sum()
    return float(odds), float(min(p, 1.0))


def _log_comb(n: int | np.ndarray, k: np.ndarray) -> np.ndarray:
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def _cochran_holds(expected: np.ndarray) -> bool:
    return expected.min() >= 1.0 and np.count_nonzero(expected < MIN_EXPECTED) <= 0.2 * expected.size


def table_test(ref_counts: np.ndarray, win_counts: np.ndarray) -> TableTest:
    """Test whether two count vectors over the same levels come from one distribution.

    Levels are pooled (see module docstring).  With a single level left there is no
    evidence either way: ``p_value = 1.0``, test ``"chi2 (one level)"``.
    """
    table = np.vstack([ref_counts, win_counts]).astype(np.int64)
    totals = table.sum(axis=0)
    if not totals.all():
        table = table[:, totals > 0]
    expected = _expected(table.astype(float)) if table.shape[1] > 2 else None
    if expected is None or not _cochran_holds(expected):  # a table that needs no pooling
        table, expected = _pool(table), None  # (expected >= 1 everywhere) has no hopeless column
    if table.shape[1] < 2:
        return TableTest("chi2 (one level)", 0.0, 1.0, table)
    expected = _expected(table.astype(float)) if expected is None else expected
    if table.shape[1] == 2 and expected.min() < MIN_EXPECTED:
        odds, p = fisher_two_sided(table)
        return TableTest("fisher", odds, p, table)
    stat, p = chi2_table(table, expected)
    return TableTest("chi2", stat, p, table)


def _padded(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Count pairs as one tables × 2 × levels float array (zero beyond each table's levels)."""
    table = np.zeros((len(pairs), 2, max(len(r) for r, _ in pairs)))
    for i, (ref, win) in enumerate(pairs):
        table[i, 0, :len(ref)], table[i, 1, :len(win)] = ref, win
    return table


def table_tests(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[TableTest]:
    """:func:`table_test` of many ``(reference counts, window counts)`` pairs, each with a
    window count. The common case (three or more levels with counts, Cochran's rule
    holding, so no pooling: chi-squared without Yates) is computed for all tables at
    once, with the same float operations; the others one by one."""
    if not pairs:
        return []
    table = _padded(pairs)
    totals = table.sum(axis=1)
    valid = (totals > 0)[:, None, :]  # a level without counts is dropped, as table_test does
    levels = valid.sum(axis=(1, 2))
    expected = table.sum(axis=2)[:, :, None] * totals[:, None, :] / table.sum(axis=(1, 2))[:, None, None]
    checked = np.where(valid, expected, np.inf)
    cochran = (checked.min(axis=(1, 2)) >= 1.0) & (
        np.count_nonzero(checked < MIN_EXPECTED, axis=(1, 2)) <= 0.2 * 2 * levels)
    stat = np.where(valid, (table - expected) ** 2 / np.where(valid, expected, 1.0), 0.0).sum(axis=(1, 2))
    p = special.chdtrc(levels - 1, stat)
    return [TableTest("chi2", float(stat[i]), float(p[i]),
                      table[i][:, valid[i, 0]].astype(np.int64))
            if cochran[i] and levels[i] > 2 else table_test(*pairs[i]) for i in range(len(pairs))]


def jensen_shannon_many(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """:func:`jensen_shannon` of many count pairs at once (each with counts on both sides)."""
    if not pairs:
        return np.empty(0)
    table = _padded(pairs)
    shares = table / table.sum(axis=2, keepdims=True)
    middle = shares.sum(axis=1, keepdims=True) / 2
    ratio = np.divide(shares, middle, out=np.ones_like(shares), where=shares > 0)  # 1: log 0
    return np.sqrt(np.maximum((shares * np.log2(ratio)).sum(axis=(1, 2)) / 2, 0.0))


def jensen_shannon(ref_counts: np.ndarray, win_counts: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between two count vectors."""
    p = ref_counts / ref_counts.sum()
    q = win_counts / win_counts.sum()
    m = (p + q) / 2
    in_p, in_q = p > 0, q > 0
    kl_p = p[in_p] @ np.log2(p[in_p] / m[in_p])
    kl_q = q[in_q] @ np.log2(q[in_q] / m[in_q])
    return float(np.sqrt(max((kl_p + kl_q) / 2, 0.0)))


def _distinct_counts(values: Any) -> tuple[list, np.ndarray]:
    """The distinct non-missing values of an array and how often each occurs."""
    if isinstance(getattr(values, "dtype", None), pd.StringDtype) and values.dtype.storage == "pyarrow":
        counted = pc.value_counts(pa.array(values))
        distinct = counted.field("values")
        uniques = distinct.to_pylist()
        per_unique = counted.field("counts").to_numpy().astype(np.int64)
        if distinct.null_count == 0:
            return uniques, per_unique
        present = [u is not None for u in uniques]
        return [u for u in uniques if u is not None], per_unique[np.array(present)]
    codes, uniques = pd.factorize(values)
    per_unique = np.bincount(codes + 1, minlength=len(uniques) + 1)[1:].astype(np.int64)
    return uniques.tolist(), per_unique  # a list: cheaper to walk than an extension array


class CategoricalReference:
    """Level counts of one categorical reference column.

    ``values`` must hold at least one non-missing value.  Window levels never seen in
    the reference become extra columns of the table (they count as evidence of drift).
    """

    def __init__(self, values: pd.Series) -> None:
        present = values[values.notna()]
        counts = present.value_counts(sort=True)
        self.levels = pd.Index(counts.index)
        self.counts = counts.to_numpy(dtype=np.int64)
        self.string_levels = all(isinstance(v, str) for v in self.levels)
        self._position = {level: i for i, level in enumerate(self.levels)}

    def window_counts(self, values: Any) -> tuple[np.ndarray, np.ndarray, list]:
        """``(reference counts, window counts, the window's distinct values)``, counts
        aligned on reference + unseen levels; missing values are not counted.

        The window's values are counted once (Arrow's ``value_counts`` for Arrow
        strings, else ``pd.factorize``) and only the distinct values are looked up in
        the levels.
        """
        uniques, per_unique = _distinct_counts(values)
        where = [self._position.get(u, -1) for u in uniques]
        counts = np.zeros(len(self.levels), dtype=np.int64)
        if -1 not in where:  # every level seen in the reference
            counts[where] = per_unique
            return self.counts, counts, uniques
        where = np.array(where, dtype=np.int64)
        counts[where[where >= 0]] = per_unique[where >= 0]
        extra = np.sort(per_unique[where < 0])[::-1]
        return (np.concatenate([self.counts, np.zeros(len(extra), np.int64)]),
                np.concatenate([counts, extra]), uniques)
