"""A point-mass test per numeric feature: has one value become far more frequent?

A feature knocked out — stuck at a default, a median or zero in part of the rows — moves
the KS statistic by only about half the stuck share, but piles many window rows on one
value. Given the pooled multiset of a feature's reference and window values, under no
drift the window is a uniformly random subset of the pool (the rows are exchangeable),
so a value held ``c`` times in the pool appears ``K ~ Hypergeometric(N, c, n)`` times in
the window (``N`` pooled values, ``n`` in the window). Each value's tail
``p_v = P(K >= k_v)`` is exact; the feature's p-value is ``M · min_v p_v``, where ``M``
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


def _log_hyper_pmf(k: np.ndarray, total: np.ndarray, good: np.ndarray, draws: np.ndarray) -> np.ndarray:
    return (_log_comb(good, k) + _log_comb(total - good, draws - k) - _log_comb(total, draws))


def _log_comb(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def hypergeom_tail(k: np.ndarray, total: np.ndarray, good: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``P(K >= k)`` for ``K ~ Hypergeometric(total, good, draws)``, elementwise (as
    ``scipy.stats.hypergeom.sf(k - 1, total, good, draws)``)."""
    k, total, good, draws = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in
                                                  (k, total, good, draws)))
    top = np.minimum(good, draws)
    width = int(np.max(top - k, initial=0)) + 1
    steps = np.arange(width)[None, :]
    support = k.ravel()[:, None] + steps
    valid = support <= top.ravel()[:, None]
    logs = _log_hyper_pmf(np.where(valid, support, 0), total.ravel()[:, None],
                          good.ravel()[:, None], draws.ravel()[:, None])
    tail = np.where(valid, np.exp(logs), 0.0).sum(axis=1)
    return np.clip(np.where(k.ravel() <= 0, 1.0, tail), 0.0, 1.0).reshape(k.shape)


def _window_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal values in a sorted 1-D array."""
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    return starts, np.diff(np.append(starts, len(values)))


class PointMassReference:
    """The repeated values of each numeric reference column (``sorted``: one sorted
    array of non-missing values per feature)."""

    def __init__(self, sorted_columns: list[np.ndarray]) -> None:
        self.repeated: list[tuple[np.ndarray, np.ndarray]] = []
        self.singletons = np.zeros(len(sorted_columns), dtype=np.int64)
        for f, ref in enumerate(sorted_columns):
            values, counts = np.unique(ref, return_counts=True)
            self.repeated.append((values[counts > 1], counts[counts > 1]))
            self.singletons[f] = np.count_nonzero(counts == 1)
        self.n = np.array([len(r) for r in sorted_columns])

    def p_values(self, at: Located) -> list[float | None]:
        """Each feature's point-mass p-value (None: no value repeats in the pool, or
        the pool holds a single value: the test cannot reject)."""
        has_ties = self._window_ties(at)
        return [self._feature(f, at) if has_ties[f] or len(self.repeated[f][0]) else None
                for f in range(len(self.n))]

    @staticmethod
    def _window_ties(at: Located) -> np.ndarray:
        """Features whose window repeats a value or meets a reference value."""
        width = at.sorted.shape[1]
        inside = np.arange(width - 1)[None, :] < (at.n_window - 1)[:, None]
        repeats = ((at.sorted[:, 1:] == at.sorted[:, :-1]) & inside).any(axis=1)
        return repeats if at.left is at.right else repeats | (at.right != at.left).any(axis=1)

    def _feature(self, f: int, at: Located) -> float | None:
        n_win = int(at.n_window[f])
        window = at.sorted[f, :n_win]
        starts, k = _window_runs(window)
        ref_count = (at.right[f, starts] - at.left[f, starts]).astype(float)
        values, counts = self.repeated[f]
        absent = ~np.isin(values, window[starts])
        pooled = np.concatenate([k + ref_count, counts[absent]]).astype(float)
        # reference values seen once and not in the window: each could show up once
        lone = int(self.singletons[f] - np.count_nonzero(ref_count == 1))
        if pooled.max(initial=0) < 2 or len(pooled) + lone < 2:
            return None
        total = float(self.n[f] + n_win)
        tails = hypergeom_tail(np.concatenate([k, np.zeros(absent.sum())]), total, pooled, n_win)
        best = float(tails.min())
        lowest = hypergeom_tail(np.minimum(pooled, n_win), total, pooled, n_win)
        m = int(np.count_nonzero(lowest <= best)) + lone * (n_win / total <= best)
        return min(1.0, best * m)
