"""Two-sample Kolmogorov–Smirnov and Wasserstein statistics for many features at once.

The reference is sorted once (:func:`sort_columns`); a window costs one 2-D sort and a
``searchsorted`` per feature, after which every D statistic is computed in one pass over
a ``(features, window)`` array.  p-values follow :func:`scipy.stats.ks_2samp` with
``method="auto"`` exactly: exact when ``max(n1, n2) <= 10_000`` (falling back to the
asymptotic formula when the exact computation fails, as scipy does), asymptotic
otherwise, using scipy's own distribution code.  The exact p-value depends only on
``(n1, n2, h)`` with ``h = round(D * lcm(n1, n2))``; it is memoised because a monitor
tests window after window of one size against one reference, where the same few
hundred values of ``h`` recur.

Speed from the first window: when both sizes are large (``min(n1, n2) >= FAST_MIN_N``
and ``n1 · n2 >= FAST_MIN_CELLS``) one exact p-value costs milliseconds. Given the
decision threshold of each feature, :meth:`NumericReference.compare` then computes the
exact p-value only when Stephens' asymptotic one lies within a factor :data:`BAND` of the
threshold (or is already memoised); elsewhere it reports the asymptotic value, flagged
``exact = False``. In that regime the asymptotic value is within a factor 1.25 of the
exact one (checked over a grid of sizes by ``tests/test_drift_speed.py``), far inside
the band, so every decision ``p <= threshold`` is the one scipy's exact p-value gives.
"""

from __future__ import annotations

import math
import numpy as np
from scipy import special, stats
from scipy.stats import _stats_py  # scipy's own exact two-sample KS p-value

__all__ = ["Located", "NumericComparison", "NumericReference", "ks_p_value"]

#: ``scipy.stats.ks_2samp(method="auto")`` is exact when both sizes are at most this.
MAX_EXACT_N = 10_000
#: Sizes from which the exact p-value is computed only near a decision threshold.
FAST_MIN_N = 500
FAST_MIN_CELLS = 1_000_000
#: Exact p-values are computed when the asymptotic one is within this factor of the threshold.
BAND = 2.0
#: Memoised exact p-values kept (a dict, cleared when full).
MEMO_SIZE = 1 << 16
_MEMO: dict[tuple[int, int, int], float] = {}


def _window_right_counts(window_sorted: np.ndarray) -> np.ndarray | None:
    """For each sorted row, the number of elements ``<=`` each element (ties aware);
    None when no row has a tie (element k then has k + 1 elements ``<=`` it)."""
    n_rows, width = window_sorted.shape
    is_end = np.ones((n_rows, width), dtype=bool)
    is_end[:, :-1] = window_sorted[:, 1:] != window_sorted[:, :-1]
    if is_end.all():
        return None
    end_pos = np.where(is_end, np.arange(width), width)
    return np.minimum.accumulate(end_pos[:, ::-1], axis=1)[:, ::-1] + 1


def _reference_counts(reference: list[np.ndarray], window_sorted: np.ndarray,
                      n_window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of reference values ``<=`` (right) and ``<`` (left) each window value.

    A window value ties with the reference when the reference value below its right
    count equals it: checked row by row, while the row's searched cells are in cache.
    """
    right = np.zeros(window_sorted.shape, dtype=np.int64)
    tied_rows = []
    for f, (ref, n) in enumerate(zip(reference, n_window)):
        values = window_sorted[f, :n]
        right[f, :n] = counts = np.searchsorted(ref, values, side="right")
        if (ref[np.maximum(counts - 1, 0)] == values).any():  # (count 0: ref[0] is above)
            tied_rows.append(f)
    left = right.copy() if tied_rows else right  # no ties: the same counts
    for f in tied_rows:
        values = window_sorted[f, :n_window[f]]
        cols = np.flatnonzero(reference[f][np.maximum(right[f, :len(values)] - 1, 0)] == values)
        left[f, cols] = np.searchsorted(reference[f], values[cols], side="left")
    return right, left


def _d_statistics(right: np.ndarray, left: np.ndarray, window_sorted: np.ndarray,
                  n_ref: np.ndarray, n_win: np.ndarray) -> np.ndarray:
    """sup |F_ref - F_win| per feature, as scipy defines it, in exact integers.

    ``D · n1 · n2`` is the largest of ``right · n2 - (window count <=) · n1`` (at each
    window value), its negative, and ``left · n2 - k · n1`` (just below the k-th
    value): integer arithmetic, so D is the exact fraction (scipy's float value rounds
    to the same lattice point ``h / lcm(n1, n2)``). 0 for a feature without values.
    Without ties the first is the last minus n1: two passes fewer.
    """
    width = window_sorted.shape[1]
    n1 = n_ref.astype(np.int64)[:, None]
    n2 = np.maximum(n_win, 1).astype(np.int64)[:, None]  # empty rows are masked out
    gap = (right if left is right else left) * n2 - np.arange(width) * n1
    counts = _window_right_counts(window_sorted)
    simple = left is right and counts is None  # no ties: diff = gap - n1
    diff = gap - n1 if simple else right * n2 - (
        np.arange(1, width + 1) if counts is None else counts) * n1
    if (n_win == width).all():  # no missing values: nothing to mask
        high, low = gap.max(axis=1), diff.min(axis=1)
        high = high if simple else np.maximum(high, diff.max(axis=1))
    else:
        valid = np.arange(width)[None, :] < n_win[:, None]
        high = np.maximum(np.where(valid, diff, 0).max(axis=1), np.where(valid, gap, 0).max(axis=1))
        low = np.where(valid, diff, 0).min(axis=1)
    return np.maximum(high, -low) / (n1[:, 0] * n2[:, 0]).astype(float)


def _exact_p(n1: int, n2: int, h: int) -> float:
    """scipy's exact two-sided p-value for D = h / lcm(n1, n2); NaN when it fails (memoised)."""
    key = (n1, n2, h)
    if key not in _MEMO:
        g = math.gcd(n1, n2)
        lcm = (n1 // g) * n2
        with np.errstate(all="ignore"):
            ok, _, prob = _stats_py._attempt_exact_2kssamp(n1, n2, g, h / lcm, "two-sided")
        if len(_MEMO) >= MEMO_SIZE:
            _MEMO.clear()
        _MEMO[key] = float(prob) if ok else math.nan
    return _MEMO[key]


def clear_memo() -> None:
    """Forget every memoised exact p-value (benchmarks time the first window with it)."""
    _MEMO.clear()


def stephens_p(d: np.ndarray, n1: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Asymptotic two-sided p-value with Stephens' small-sample correction (vectorized)."""
    root = np.sqrt(n1 * n2 / (n1 + n2))
    return special.kolmogorov(d * (root + 0.12 + 0.11 / root))


def _fast_rows(n1: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Where the band applies: large on both sides, still on scipy's exact path."""
    n1, n2 = n1.astype(np.int64, copy=False), n2.astype(np.int64, copy=False)
    return ((np.minimum(n1, n2) >= FAST_MIN_N) & (n1 * n2 >= FAST_MIN_CELLS)
            & (np.maximum(n1, n2) <= MAX_EXACT_N))


def _lattice_all(d: np.ndarray, n1: np.ndarray, n2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized :func:`_lattice_d`: (D on the lattice, h) per feature."""
    n1, n2 = n1.astype(np.int64, copy=False), n2.astype(np.int64, copy=False)
    lcm = (n1 // np.gcd(n1, n2)) * n2
    h = np.round(d * lcm)
    return h / lcm, h.astype(np.int64)


def _banded(d: np.ndarray, n1: np.ndarray, n2: np.ndarray, thresholds: np.ndarray,
            fast: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which ``fast`` features may report Stephens' p-value: far (beyond a factor BAND)
    from their threshold, not memoised, D > 0 and a threshold above 1e-12; with their
    D on the lattice and that p-value."""
    far = np.zeros(len(d), dtype=bool)
    rows = np.flatnonzero(fast)
    if rows.size == 0:
        return far, d[:0], d[:0]
    d_l, h = _lattice_all(d[rows], n1[rows], n2[rows])
    approx = stephens_p(d_l, n1[rows], n2[rows])  # (integer sizes: the same floats)
    t = thresholds[rows]
    keep = ((approx <= t / BAND) | (approx >= t * BAND)) & (h > 0) & (t >= 1e-12)
    if _MEMO:  # a memoised exact p-value is free: report it
        keep &= ~np.array([k in _MEMO for k in zip(n1[rows].tolist(), n2[rows].tolist(),
                                                    h.tolist())], dtype=bool)
    far[rows[keep]] = True
    return far, d_l[keep], np.clip(approx[keep], 0.0, 1.0)


def _lattice_d(d: float, n1: int, n2: int) -> tuple[float, int]:
    """D rounded to the lattice h / lcm(n1, n2), as scipy rounds it, and h."""
    lcm = (n1 // math.gcd(n1, n2)) * n2
    h = int(np.round(d * lcm))
    return h / lcm, h


def _asymptotic_p(d: float, n1: int, n2: int) -> float:
    """scipy's asymptotic two-sided p-value (``kstwo`` with the effective size)."""
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return float(stats.kstwo.sf(d, np.round(m * n / (m + n))))


def ks_p_value(d: float, n1: int, n2: int) -> tuple[float, float]:
    """``(statistic, p)`` as ``scipy.stats.ks_2samp(method="auto")`` reports them."""
    if max(n1, n2) <= MAX_EXACT_N:
        d, h = _lattice_d(d, n1, n2)
        p = 1.0 if h == 0 else _exact_p(n1, n2, h)
        if not math.isnan(p) and 0.0 <= p <= 1.0:
            return d, p
    return d, float(np.clip(_asymptotic_p(d, n1, n2), 0.0, 1.0))


def _take(matrix: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``matrix[i, idx[i, j]]`` for every row i (a flat gather, cheaper than take_along_axis)."""
    offsets = (np.arange(matrix.shape[0]) * matrix.shape[1])[:, None]
    return matrix.ravel()[idx + offsets]


def _integral_at(cumsum: np.ndarray, ref: np.ndarray, shift: np.ndarray, n1: np.ndarray,
                 rows: np.ndarray, num: np.ndarray, den: int) -> np.ndarray:
    """∫_0^u (Q_ref - shift) at u = num / den on the features ``rows`` (elementwise;
    ``n1``: their sizes): a prefix sum plus a partial step."""
    idx = (num * n1) // den
    rem = (num * n1 - idx * den) / (n1 * den)
    return cumsum[rows, idx] / n1 + rem * (ref[rows, np.minimum(idx, n1 - 1)] - shift[rows])


def _rows(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return matrix if len(rows) == matrix.shape[0] else matrix[rows]


def _row_sums(row: np.ndarray, values: np.ndarray, n_rows: int) -> np.ndarray:
    """The sum of ``values`` per row index (floats, zero for a row without any)."""
    return np.bincount(row, weights=values, minlength=n_rows).astype(float, copy=False)


def _run_ends(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each run of True in the rows of ``mask`` starts (row, column, -1) and the
    column just after it ends (row, column, +1; the row width at the end of a row)."""
    width = mask.shape[1]
    edge = np.empty((mask.shape[0], width + 1), dtype=bool)
    edge[:, 0], edge[:, -1] = mask[:, 0], mask[:, -1]
    np.not_equal(mask[:, 1:], mask[:, :-1], out=edge[:, 1:-1])
    row, col = np.divmod(np.flatnonzero(edge), width + 1)
    starts = (col < width) & mask[row, np.minimum(col, width - 1)]
    return row, col, np.where(starts, -1.0, 1.0)


def _sizes(n_win: np.ndarray) -> np.ndarray:
    """The distinct non-zero window sizes (one, without sorting, when all are equal)."""
    if n_win.size and (n_win == n_win[0]).all():
        return n_win[:1] if n_win[0] > 0 else n_win[:0]
    return np.unique(n_win[n_win > 0])


def _wasserstein(ref: np.ndarray, cumsum: np.ndarray, n_ref: np.ndarray,
                 window_sorted: np.ndarray, left: np.ndarray, n_win: np.ndarray,
                 shift: np.ndarray) -> np.ndarray:
    """W1 = Σ_j ∫ over window quantile step j of |Q_ref(u) - w_j| du, via prefix sums.

    On the step u ∈ [a, b] = [j/n2, (j+1)/n2], Q_ref < w_j exactly for u < x = left_j / n1,
    so the integral is ∫_a^b (Q_ref - w_j) + 2 ∫_a^{clip(x, a, b)} (w_j - Q_ref). Where x
    lies is decided in integers (``t = left_j · n2 - j · n1`` against 0 and n1). The
    ∫ Q_ref over the steps with x past b telescope over each run of them, so only the
    ends of runs and the few steps that hold x need a prefix-sum lookup: a window reads
    a few cache lines of the reference, not all of it, and nothing is kept between windows.
    """
    out = np.full(len(n_ref), np.nan)
    for n2 in _sizes(n_win):
        rows = np.flatnonzero(n_win == n2)
        n2 = int(n2)
        n1 = n_ref[rows, None].astype(np.int64)
        c = _rows(window_sorted, rows)[:, :n2] - shift[rows, None]
        lft = _rows(left, rows)[:, :n2]
        t = lft * n2 - (np.arange(n2) * n1[0] if (n1 == n1[0]).all() else np.arange(n2) * n1)
        above = t >= n1  # x past the step: t · ... = (x - a) · n1 · n2
        clipped = np.maximum(t, 0)
        part = (c * np.minimum(clipped, n1, out=clipped)).sum(axis=1)  # Σ w_j (clip(x) - a)
        r, j, sign = _run_ends(above)  # -∫_0^{j/n2} where a run of such steps starts, + after it
        r2, k = np.divmod(np.flatnonzero((t > 0) & ~above), n2)  # x inside step k: ∫_a^x Q_ref
        row, grid = np.concatenate([r, r2]), np.concatenate([j, k])
        sign = np.concatenate([sign, np.full(len(r2), -1.0)])
        at = rows[row]
        q = sign * _integral_at(cumsum, ref, shift, n1[row, 0], at, grid, n2)
        q[len(r):] += cumsum[at[len(r):], lft[r2, k]] / n1[r2, 0]
        whole = cumsum[rows, n1[:, 0]] / n1[:, 0]
        inner = part / (n1[:, 0] * n2) - _row_sums(row, q, len(rows))
        out[rows] = whole - c.sum(axis=1) / n2 + 2 * inner
    return out


class NumericComparison:
    """Per-feature KS statistic, p-value, Wasserstein distance and non-missing sizes."""

    __slots__ = ("statistic", "p_value", "wasserstein", "n_reference", "n_window", "exact")

    def __init__(self, statistic: np.ndarray, p_value: np.ndarray, wasserstein: np.ndarray,
                 n_reference: np.ndarray, n_window: np.ndarray,
                 exact: np.ndarray | None = None) -> None:
        self.statistic = statistic
        self.p_value = p_value
        self.wasserstein = wasserstein
        self.n_reference = n_reference
        self.n_window = n_window
        self.exact = np.ones(len(p_value), dtype=bool) if exact is None else exact


class Located:
    """A window's columns sorted and placed in a reference (see :meth:`NumericReference.locate`).

    ``order`` (features × rows) sorts each window column (NaN last); ``sorted`` is the
    sorted values, ``n_window`` the non-missing count per feature, and ``right`` /
    ``left`` the number of reference values ``<=`` / ``<`` each sorted window value
    (0 at NaN slots).
    """

    __slots__ = ("order", "sorted", "n_window", "right", "left")

    def __init__(self, order: np.ndarray, values: np.ndarray, n_window: np.ndarray,
                 right: np.ndarray, left: np.ndarray) -> None:
        self.order, self.sorted, self.n_window = order, values, n_window
        self.right, self.left = right, left


class NumericReference:
    """Numeric reference columns, sorted once, compared against window after window.

    ``matrix`` is rows × features (float, NaN = missing); every column needs at least
    one non-missing value.
    """

    def __init__(self, matrix: np.ndarray) -> None:
        ordered = np.sort(matrix, axis=0).T  # features × rows, NaN last
        self.n = np.count_nonzero(~np.isnan(ordered), axis=1)
        self.padded = np.ascontiguousarray(np.where(np.isnan(ordered), np.inf, ordered))
        self.sorted = [row[:n] for row, n in zip(self.padded, self.n)]  # views: one copy
        self.shift = np.array([np.mean(r) if len(r) else 0.0 for r in self.sorted])
        last = np.array([r[-1] if len(r) else 0.0 for r in self.sorted])
        filled = np.where(np.isnan(ordered), last[:, None], ordered) - self.shift[:, None]
        self.cumsum = np.ascontiguousarray(np.concatenate(
            [np.zeros((len(filled), 1)), np.cumsum(filled, axis=1)], axis=1))

    def locate(self, window: np.ndarray) -> Located:
        """Sort each column of ``window`` (rows × features) and count the reference
        values below each value: the one pass the KS test and the normal scores share."""
        columns = np.ascontiguousarray(window.T)
        order = np.argsort(columns, axis=1)  # NaN last
        values = _take(columns, order)
        width = values.shape[1]
        n_win = (np.full(len(values), width) if width == 0 or not np.isnan(values[:, -1]).any()
                 else np.count_nonzero(~np.isnan(values), axis=1))
        right, left = _reference_counts(self.sorted, values, n_win)
        return Located(order, values, n_win, right, left)

    def compare(self, window: np.ndarray | Located,
                thresholds: np.ndarray | None = None) -> NumericComparison:
        """KS (as ``scipy.stats.ks_2samp``) and Wasserstein of each column of ``window``.

        ``window`` is rows × features (or its :meth:`locate` result) and may hold NaN
        (dropped per feature); features with no window values get NaN statistics.
        ``thresholds`` (one per feature: the p-value at or below which it is rejected)
        lets large samples skip the exact p-value away from the threshold (see the
        module docstring); without it every p-value is scipy's.
        """
        at = window if isinstance(window, Located) else self.locate(window)
        n_win = at.n_window
        d_raw = _d_statistics(at.right, at.left, at.sorted, self.n, n_win)
        stat, p, exact = _p_values(d_raw, self.n, n_win, thresholds)
        dist = _wasserstein(self.padded, self.cumsum, self.n, at.sorted, at.left, n_win,
                            self.shift)
        return NumericComparison(stat, p, dist, self.n.copy(), n_win, exact)


def _p_values(d_raw: np.ndarray, n_ref: np.ndarray, n_win: np.ndarray,
              thresholds: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D on the lattice, p-value, exact?) per feature: Stephens' p-value where the band
    allows it (see the module docstring), scipy's everywhere else; NaN without values."""
    stat, p = np.full(len(n_ref), np.nan), np.full(len(n_ref), np.nan)
    far = np.zeros(len(n_ref), dtype=bool)
    if thresholds is not None:
        far, d_far, p_far = _banded(d_raw, n_ref, n_win, thresholds,
                                    (n_win > 0) & _fast_rows(n_ref, n_win))
        stat[far], p[far] = d_far, p_far
    for f in np.flatnonzero((n_win > 0) & ~far):  # scipy's p-value
        stat[f], p[f] = ks_p_value(float(d_raw[f]), int(n_ref[f]), int(n_win[f]))
    return stat, p, ~far
