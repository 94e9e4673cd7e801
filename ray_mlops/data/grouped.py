"""Per-entity reductions over flat numpy arrays: the arithmetic of every entity step.

A :class:`Groups` holds, for ``N`` records, which of ``n`` entities each belongs to, with
the records ordered entity by entity. Its reductions (sum, NaN-skipping mean and max,
window statistics) cost a few numpy calls whatever ``N`` and ``n`` are, so the same code
aggregates a Ray Data block of thousands of entities and the one entity of an online
request — batch and online features are computed by the same arithmetic.

>>> groups = Groups.from_codes(np.array([1, 0, 1]), 2)
>>> groups.sizes.tolist(), groups.sum(np.array([1.0, 2.0, 3.0])).tolist()
([1, 2], [2.0, 4.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Groups:
    """``order`` sorts records by group (then by ``then``); ``starts``/``sizes`` slice the sorted records."""

    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    @classmethod
    def from_codes(cls, codes: np.ndarray, n: int, then: np.ndarray | None = None) -> "Groups":
        """Groups ``0..n-1`` (each non-empty) of records with group ``codes``; ties ordered by ``then``, stably."""
        codes = np.asarray(codes, dtype=np.int64)
        order = np.argsort(codes, kind="stable") if then is None else np.lexsort((then, codes))
        sizes = np.bincount(codes, minlength=n)
        return cls(order, np.cumsum(sizes) - sizes, sizes)

    @property
    def position(self) -> np.ndarray:
        """Each sorted record's position within its group (0 = first)."""
        return np.arange(len(self.order)) - np.repeat(self.starts, self.sizes)

    def tail(self, window: int) -> "Groups":
        """The last ``window`` records of each group, in the same order."""
        keep = self.position >= np.repeat(self.sizes - window, self.sizes)
        sizes = np.minimum(self.sizes, window)
        return Groups(self.order[keep], np.cumsum(sizes) - sizes, sizes)

    def sorted(self, values: np.ndarray) -> np.ndarray:
        """``values`` (records first) in group order."""
        return np.asarray(values, dtype=np.float64)[self.order]

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Per-group sums of ``values`` (1-D, or 2-D with records as rows)."""
        return np.add.reduceat(self.sorted(values), self.starts, axis=0)

    def mean(self, values: np.ndarray) -> np.ndarray:
        """Per-group means skipping NaN (NaN where a group has no number)."""
        sorted_values = self.sorted(values)
        present = ~np.isnan(sorted_values)
        total = np.add.reduceat(np.where(present, sorted_values, 0.0), self.starts, axis=0)
        count = np.add.reduceat(present.astype(np.float64), self.starts, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan)

    def max(self, values: np.ndarray) -> np.ndarray:
        """Per-group maxima skipping NaN."""
        return np.fmax.reduceat(self.sorted(values), self.starts, axis=0)

    def min(self, values: np.ndarray) -> np.ndarray:
        """Per-group minima skipping NaN."""
        return np.fmin.reduceat(self.sorted(values), self.starts, axis=0)

    def last(self, values: np.ndarray) -> np.ndarray:
        """Each group's last value."""
        return self.sorted(values)[self.starts + self.sizes - 1]

    def spread(self, per_group: np.ndarray) -> np.ndarray:
        """A per-group value repeated for each of the group's (sorted) records."""
        return np.repeat(per_group, self.sizes, axis=0)


def std_and_slope(groups: Groups, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample standard deviation and least-squares slope per position, per group (NaN if undefined)."""
    x = groups.sorted(values)
    n = groups.sizes.astype(np.float64)
    centred_x = x - groups.spread(np.add.reduceat(x, groups.starts) / n)
    centred_t = groups.position - groups.spread((n - 1) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(np.add.reduceat(centred_x**2, groups.starts) / (n - 1))
        denominator = np.add.reduceat(centred_t**2, groups.starts)
        slope = np.add.reduceat(centred_t * centred_x, groups.starts) / denominator
    return np.where(n > 1, std, np.nan), np.where(denominator > 0, slope, np.nan)


__all__ = ["Groups", "std_and_slope"]
