"""A point-mass test per numeric feature: has one value become far more frequent?

A feature knocked out — stuck at a default, a median or zero in part of the rows — moves
the KS statistic by only about half the stuck share, but piles many window rows on one
value. Given the pooled multiset of a feature's reference and window values, under no
drift the window is a uniformly random subset of the pool (the rows are exchangeable),
so a value held ``c`` times in the pool appears ``K ~ Hypergeometric(N, c, n)`` times in
the window (``N`` pooled values, ``n`` in the window). Each value's tail
``p_v = P(K >= k_v)`` is exact (or bounded above: a value at or below its mode counts
as 1, a long tail ends in a geometric bound); the feature's p-value is ``M · min_v p_v``, where ``M``
counts the values whose *smallest possible* tail (all ``min(c, n)`` copies drawn) is at
most ``min_v p_v``: a union bound over the only values that could have produced so small
a tail, valid whatever the data. A value seen once in the pool can never be surprising,
so a pool without repeated values gives no test (``None``), and continuous features
cost nothing: repeated values are read off the counts the KS test already has.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ray_mlops.monitor._ks import Located

__all__ = ["PointMassReference"]


#: Terms of a tail summed exactly; a geometric bound covers the rest (an upper bound).
TAIL_TERMS = 128


def _log_comb(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def hypergeom_pmf(k: np.ndarray, total: np.ndarray, good: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``P(K = k)`` for ``K ~ Hypergeometric(total, good, draws)``, elementwise."""
    return np.exp(_log_comb(good, k) + _log_comb(total - good, draws - k)
                  - _log_comb(total, draws))


def hypergeom_mode(total: np.ndarray, good: np.ndarray, draws: np.ndarray) -> np.ndarray:
    return np.floor((draws + 1) * (good + 1) / (total + 2))


def upper_tail(k: np.ndarray, total: np.ndarray, good: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``P(K >= k)`` for ``k`` above the mode, elementwise: the first TAIL_TERMS terms
    by the pmf's ratio recursion, the rest bounded by a geometric series (past the mode
    the ratio of successive terms falls), so the value is exact or slightly above."""
    k, total, good, draws = (np.asarray(a, dtype=float)[:, None] for a in (k, total, good, draws))
    j = k + np.arange(TAIL_TERMS)[None, :]
    ratio = np.clip((good - j) * (draws - j) / ((j + 1) * (total - good - draws + j + 1)), 0, 1)
    steps = np.concatenate([np.ones((len(k), 1)), np.cumprod(ratio[:, :-1], axis=1)], axis=1)
    terms = hypergeom_pmf(k, total, good, draws) * steps
    r = ratio[:, -1]
    rest = np.where(r < 1, terms[:, -1] * r / np.where(r < 1, 1 - r, 1.0), 1.0)
    return np.clip(terms.sum(axis=1) + rest, 0.0, 1.0)


def _window_runs(at: Located, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of equal sorted window values of the features ``rows``: (feature,
    length, count of the value in the reference), in feature order."""
    values, n_win = at.sorted[rows], at.n_window[rows]
    width = values.shape[1]
    valid = np.arange(width)[None, :] < n_win[:, None]
    new = valid.copy()
    new[:, 1:] &= values[:, 1:] != values[:, :-1]
    index, col = np.nonzero(new)
    feature = rows[index]
    following = np.append(col[1:], width)
    last = np.append(index[1:] != index[:-1], True)
    length = np.where(last, n_win[index], following) - col
    return feature, length.astype(float), (at.right[feature, col] - at.left[feature, col]).astype(float)


class PointMassReference:
    """The repeated values of each numeric reference column (``sorted``: one sorted
    array of non-missing values per feature)."""

    def __init__(self, sorted_columns: list[np.ndarray]) -> None:
        counts = [np.diff(np.flatnonzero(np.concatenate([[True], ref[1:] != ref[:-1], [True]])))
                  for ref in sorted_columns]  # run lengths of the sorted values
        self.n = np.array([len(r) for r in sorted_columns], dtype=float)
        self.singletons = np.array([np.count_nonzero(c == 1) for c in counts], dtype=float)
        self.repeated = np.concatenate([c[c > 1] for c in counts] + [[]]).astype(float)
        self.repeated_feature = np.concatenate(
            [np.full(np.count_nonzero(c > 1), f) for f, c in enumerate(counts)] + [[]]).astype(int)
        self.has_repeats = np.bincount(self.repeated_feature, minlength=len(counts)) > 0

    def p_values(self, at: Located) -> list[float | None]:
        """Each feature's point-mass p-value (None: no value repeats in the pool, the
        pool holds a single value, or the window has no value: the test cannot reject).
        Every feature's values are computed at once."""
        features = len(self.n)
        rows = np.flatnonzero(self._window_ties(at) | self.has_repeats)
        if rows.size == 0:  # continuous features: no value repeats anywhere
            return [None] * features
        feature, k, ref = _window_runs(at, rows)
        n_win = at.n_window.astype(float)
        total, pooled = self.n + n_win, k + ref
        repeats = np.bincount(self.repeated_feature, minlength=features) + np.bincount(
            feature, weights=pooled >= 2, minlength=features)
        lone = self.singletons - np.bincount(feature, weights=ref == 1, minlength=features)
        distinct = (np.bincount(feature, minlength=features) + lone + np.bincount(
            self.repeated_feature, minlength=features) - np.bincount(
            feature, weights=ref >= 2, minlength=features))
        tested = (repeats > 0) & (distinct >= 2) & (n_win > 0)
        if not tested.any():
            return [None] * features
        best = self._best(feature, k, pooled, total, n_win, tested)
        m = self._surprising(feature, pooled, ref, total, n_win, best) + lone * (
            n_win / total <= best)
        p = np.minimum(1.0, best * m)
        return [float(p[f]) if tested[f] else None for f in range(features)]

    @staticmethod
    def _window_ties(at: Located) -> np.ndarray:
        """Features whose window repeats a value or meets a reference value."""
        width = at.sorted.shape[1]
        inside = np.arange(width - 1)[None, :] < (at.n_window - 1)[:, None]
        repeats = ((at.sorted[:, 1:] == at.sorted[:, :-1]) & inside).any(axis=1)
        return repeats if at.left is at.right else repeats | (at.right != at.left).any(axis=1)

    @staticmethod
    def _best(feature: np.ndarray, k: np.ndarray, pooled: np.ndarray, total: np.ndarray,
              n_win: np.ndarray, tested: np.ndarray) -> np.ndarray:
        """The smallest tail per feature (at or below its mode a tail counts as 1)."""
        best = np.ones(len(total))
        above = tested[feature] & (k > hypergeom_mode(total[feature], pooled, n_win[feature]))
        if above.any():
            f = feature[above]
            np.minimum.at(best, f, upper_tail(k[above], total[f], pooled[above], n_win[f]))
        return best

    def _surprising(self, feature: np.ndarray, pooled: np.ndarray, ref: np.ndarray,
                    total: np.ndarray, n_win: np.ndarray, best: np.ndarray) -> np.ndarray:
        """Per feature, how many pooled values could show a tail as small as ``best``:
        those in the window, plus the repeated reference values absent from it."""
        def count(owner: np.ndarray, good: np.ndarray, keep: np.ndarray | bool = True) -> np.ndarray:
            lowest = hypergeom_pmf(np.minimum(good, n_win[owner]), total[owner], good, n_win[owner])
            return np.bincount(owner, weights=(lowest <= best[owner] * (1 + 1e-9)) & keep,
                               minlength=len(total))
        return (count(feature, pooled) + count(self.repeated_feature, self.repeated)
                - count(feature, np.maximum(ref, 1.0), ref >= 2))
