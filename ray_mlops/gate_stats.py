"""Paired tests for the promotion gate: is the candidate better than production on the same rows?

Pure numpy/scipy (no Ray, no storage), so the offline gate (:mod:`ray_mlops.promotion`) and
the monitor's online shadow stage run the same statistics on their rows.

Both models are scored on the *same* rows and the decision is a one-sided test of the
difference ``Δ = candidate − production`` (signed so that ``Δ > 0`` means the candidate is
better; for a loss such as ``rmse`` or ``log_loss``, ``Δ = production − candidate``):

* ``require="superior"``: H0 ``Δ ≤ 0`` against H1 ``Δ > 0``;
* ``require="non_inferior"``: H0 ``Δ ≤ −margin`` against H1 ``Δ > −margin``.

``passed`` is ``p_value < alpha``. ``[low, high]`` is the two-sided ``1 − 2α`` interval of
``Δ``, so ``low`` is the one-sided ``1 − α`` lower confidence bound that the test uses.

The test depends on the metric:

* ``accuracy``: with no margin, the **exact McNemar** test on the discordant pairs (rows
  exactly one model gets right): conditional on their number ``d``, the candidate's share
  is Binomial(d, ½) under H0. With a margin, **Tango's score test** for a paired difference of
  proportions (its restricted maximum-likelihood variance; Tango 1998). The interval is
  Tango's score interval in both cases.
* binary ``roc_auc``: the **paired DeLong** test (the covariance of the two AUCs from their
  placement values; DeLong, DeLong & Clarke-Pearson 1988, fast midrank form of Sun & Xu 2014).
* any other metric (``log_loss``, ``f1``, ``macro_f1``, multi-class ``roc_auc``, ``rmse``,
  ``mae``, ``r2``): a **paired bootstrap** with a fixed seed: rows are resampled together for
  both models; ``p`` is the bootstrap share of ``Δ* ≤ threshold`` and the interval its
  percentiles. Multi-class ROC AUC (the macro one-vs-rest mean) goes here because the
  per-class AUCs share rows, which DeLong's variance does not cover.

>>> y = np.array([0, 1] * 50)
>>> production = np.where(np.arange(100) % 4 == 0, 1 - y, y)      # wrong on every fourth row
>>> candidate = np.where(np.arange(100) % 20 == 0, 1 - y, y)      # wrong on every twentieth
>>> t = paired_test(y, np.eye(2)[production], np.eye(2)[candidate], metric="accuracy",
...                 margin=0.0, alpha=0.05, require="superior")
>>> t.test, t.estimate, t.rows, t.passed, round(t.p_value, 6)
('mcnemar_exact', 0.2, 100, True, 1e-06)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

from ray_mlops.train.metrics import HIGHER_IS_BETTER, class_indices

REQUIREMENTS = ("non_inferior", "superior")
BOOTSTRAP_SAMPLES = 2000
_CELLS = 4_000_000  # bootstrap weights held at once (replicates × rows)
_EPS = 1e-15


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison of a candidate against production (or the baseline) on ``rows`` rows.

    ``estimate`` is candidate minus production, signed so that > 0 is better for the
    candidate; ``[low, high]`` its two-sided ``1 − 2·alpha`` interval (``low`` is the
    one-sided ``1 − alpha`` lower bound); ``p_value`` the one-sided p of H0 ``Δ ≤ threshold``.
    """

    metric: str
    test: str
    estimate: float
    low: float
    high: float
    p_value: float
    rows: int
    margin: float
    alpha: float
    require: str
    passed: bool
    candidate_score: float = float("nan")
    production_score: float = float("nan")

    @property
    def threshold(self) -> float:
        """The Δ that H0 allows at most: 0 (superior) or −margin (non-inferior)."""
        return _threshold(self.require, self.margin)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and infinities become None)."""
        return {k: _json_number(v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        """One line: the test, the estimate with its interval, p and the row count."""
        return (f"{self.test}: Δ{self.metric}={self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}], "
                f"p={self.p_value:.3g} on {self.rows} rows ({self.require}"
                f"{f', margin {self.margin}' if self.require == 'non_inferior' else ''}, α={self.alpha})")


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _threshold(require: str, margin: float) -> float:
    return 0.0 if require == "superior" else -float(margin)


def _check_arguments(margin: float, alpha: float, require: str) -> None:
    if require not in REQUIREMENTS:
        raise ValueError(f"require must be one of {', '.join(REQUIREMENTS)}, got {require!r}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")


# -- accuracy: McNemar (exact), Tango's score test and interval -----------------------------
def mcnemar_exact_p(wins: int, losses: int) -> float:
    """One-sided exact McNemar p: P(X ≥ wins), X ~ Binomial(wins + losses, ½).

    >>> mcnemar_exact_p(8, 2)
    0.0546875
    """
    return float(stats.binom.sf(wins - 1, wins + losses, 0.5)) if wins + losses else 1.0


def _restricted_q(wins: int, losses: int, n: int, delta: float) -> float:
    """Tango's restricted MLE of P(candidate wrong, production right) under Δ = delta."""
    b = -(wins + losses) + delta * (2 * n - wins + losses)
    c = -losses * delta * (1.0 - delta)
    return (math.sqrt(max(b * b - 8.0 * n * c, 0.0)) - b) / (4.0 * n)


def tango_z(wins: int, losses: int, n: int, delta: float) -> float:
    """Tango's score statistic of H0 Δ = delta (Δ = P(win) − P(loss) of paired outcomes)."""
    q = _restricted_q(wins, losses, n, delta)
    variance = n * (2.0 * q + delta * (1.0 - delta))
    diff = wins - losses - n * delta
    if variance <= 0:
        return math.copysign(math.inf, diff) if diff else 0.0
    return diff / math.sqrt(variance)


def tango_interval(wins: int, losses: int, n: int, level: float) -> tuple[float, float]:
    """The score interval of Δ at two-sided ``level``: where |Tango's z| ≤ its quantile."""
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    lo_end, hi_end = -1.0 + 1e-12, 1.0 - 1e-12

    def root(target: float, edge: float) -> float:
        f = lambda d: tango_z(wins, losses, n, d) - target  # noqa: E731 (decreasing in d)
        estimate = (wins - losses) / n
        if f(edge) * f(estimate) > 0:
            return edge
        a, b = sorted((edge, estimate))
        return float(optimize.brentq(f, a, b, xtol=1e-12))

    return root(z, lo_end), root(-z, hi_end)


def _accuracy_test(correct_p: np.ndarray, correct_c: np.ndarray, threshold: float,
                   alpha: float) -> tuple[str, float, float, float, float]:
    n = len(correct_p)
    wins = int(np.sum(correct_c & ~correct_p))
    losses = int(np.sum(correct_p & ~correct_c))
    low, high = tango_interval(wins, losses, n, 1.0 - 2.0 * alpha)
    if threshold == 0.0:
        return "mcnemar_exact", (wins - losses) / n, low, high, mcnemar_exact_p(wins, losses)
    p = float(stats.norm.sf(tango_z(wins, losses, n, threshold)))
    return "tango_score", (wins - losses) / n, low, high, p


# -- binary ROC AUC: paired DeLong ---------------------------------------------------------
def delong_components(positive: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, placement values of the positives V10, of the negatives V01) by midranks."""
    pos, neg = scores[positive], scores[~positive]
    m, n = len(pos), len(neg)
    combined = stats.rankdata(np.concatenate([pos, neg]))
    v10 = (combined[:m] - stats.rankdata(pos)) / n
    v01 = 1.0 - (combined[m:] - stats.rankdata(neg)) / m
    return float(v10.mean()), v10, v01


def delong_paired(positive: np.ndarray, production: np.ndarray,
                  candidate: np.ndarray) -> tuple[float, float, float, float]:
    """(AUC of production, AUC of candidate, Δ, standard error of Δ) by the paired DeLong method."""
    auc_p, v10_p, v01_p = delong_components(positive, production)
    auc_c, v10_c, v01_c = delong_components(positive, candidate)
    s10 = np.cov(np.vstack([v10_c, v10_p]))
    s01 = np.cov(np.vstack([v01_c, v01_p]))
    contrast = np.array([1.0, -1.0])
    variance = contrast @ (s10 / len(v10_p) + s01 / len(v01_p)) @ contrast
    return auc_p, auc_c, auc_c - auc_p, math.sqrt(max(float(variance), 0.0))


def _normal_test(estimate: float, se: float, threshold: float, alpha: float) -> tuple[float, float, float]:
    """(low, high, one-sided p) of a normal estimate; se = 0 decides on the estimate alone."""
    if se == 0.0:
        return estimate, estimate, 0.0 if estimate > threshold else 1.0
    z = float(stats.norm.ppf(1.0 - alpha))
    return estimate - z * se, estimate + z * se, float(stats.norm.sf((estimate - threshold) / se))


# -- any metric: the paired bootstrap --------------------------------------------------------
# Each metric is written for row weights W (B × n): a bootstrap resample is the multinomial
# count of each row, so B replicates are a few matrix products; W = 1 gives the point value.
Weighted = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float = float("nan")) -> np.ndarray:
    out = np.full(np.broadcast(numerator, denominator).shape, empty)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _weighted_auc(positive: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count ½) of each weight row: Σ w_i w_j ψ(pos_i, neg_j) / (W₊ W₋)."""
    order = np.argsort(scores, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(scores[order]) != 0])  # groups of tied scores
    pos = positive[order]
    neg_w = np.add.reduceat(w[:, order] * ~pos, starts, axis=1)
    pos_w = np.add.reduceat(w[:, order] * pos, starts, axis=1)
    below = np.cumsum(neg_w, axis=1) - neg_w
    return _ratio((pos_w * (below + 0.5 * neg_w)).sum(axis=1), pos_w.sum(axis=1) * neg_w.sum(axis=1))


def _ovr_auc(index: np.ndarray, proba: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Binary: the positive column's AUC; multi-class: the macro one-vs-rest mean over present classes."""
    if proba.shape[1] == 2:
        return _weighted_auc(index == 1, proba[:, 1], w)
    per_class = np.column_stack([_weighted_auc(index == k, proba[:, k], w) for k in range(proba.shape[1])])
    present = np.isfinite(per_class).sum(axis=1)
    return _ratio(np.nansum(per_class, axis=1), np.where(present >= 2, present, 0))


def _f1s(index: np.ndarray, predicted: np.ndarray, k: int, w: np.ndarray) -> np.ndarray:
    """(B, k) per-class F1; NaN for a class neither in the labels nor the predictions."""
    actual, chosen = np.eye(k)[index], np.eye(k)[predicted]
    tp = w @ (actual * chosen)
    return _ratio(2.0 * tp, w @ actual + w @ chosen)


def _predicted_class(proba: np.ndarray) -> np.ndarray:
    """Binary: the positive class at p ≥ 0.5 (as train.metrics); multi-class: the most probable."""
    return (proba[:, 1] >= 0.5).astype(np.int64) if proba.shape[1] == 2 else proba.argmax(axis=1)


def _row_log_loss(index: np.ndarray, proba: np.ndarray) -> np.ndarray:
    upper = 1.0 - _EPS if proba.shape[1] == 2 else 1.0
    clipped = np.clip(proba, _EPS, upper)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return -np.log(clipped[np.arange(len(index)), index])


def _mean(w: np.ndarray, values: np.ndarray) -> np.ndarray:
    return (w @ values) / w.sum(axis=1)


def _r2(y: np.ndarray, predicted: np.ndarray, w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=1)
    spread = w @ (y * y) - (w @ y) ** 2 / total
    return 1.0 - _ratio(w @ ((y - predicted) ** 2), np.where(spread > 1e-12 * total, spread, 0.0))


def weighted_metric(metric: str, n_classes: int) -> Weighted:
    """``f(y, values, W)``: ``metric`` under each row of weights W; y is class indices or values."""
    k = n_classes
    known: dict[str, Weighted] = {
        "accuracy": lambda i, p, w: _mean(w, (_predicted_class(p) == i).astype(float)),
        "log_loss": lambda i, p, w: _mean(w, _row_log_loss(i, p)),
        "roc_auc": _ovr_auc,
        "f1": lambda i, p, w: np.nan_to_num(_f1s(i, _predicted_class(p), 2, w)[:, 1]),
        "macro_f1": lambda i, p, w: _macro(i, p, k, w),
    } if k else {
        "rmse": lambda y, v, w: np.sqrt(_mean(w, (y - v) ** 2)),
        "mae": lambda y, v, w: _mean(w, np.abs(y - v)),
        "r2": _r2,
    }
    if metric not in known or (metric == "f1" and k > 2):
        raise ValueError(f"metric {metric!r} is not one of {', '.join(m for m in known if k <= 2 or m != 'f1')}")
    return known[metric]


def _macro(index: np.ndarray, proba: np.ndarray, k: int, w: np.ndarray) -> np.ndarray:
    f1 = _f1s(index, _predicted_class(proba), k, w)
    return _ratio(np.nansum(f1, axis=1), np.isfinite(f1).sum(axis=1).astype(float))


def metric_value(metric: str, y: np.ndarray, values: np.ndarray, n_classes: int) -> float:
    """``metric`` of ``values`` on ``y`` (equal weights)."""
    return float(weighted_metric(metric, n_classes)(y, values, np.ones((1, len(y))))[0])


def paired_bootstrap(y: np.ndarray, production: np.ndarray, candidate: np.ndarray, fn: Weighted, *,
                     sign: float, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """``samples`` replicates of ``sign·(fn(candidate) − fn(production))``, rows resampled together.

    Replicates where the metric is undefined (e.g. one class only) are dropped.
    """
    rng = np.random.default_rng(seed)
    n, chunk = len(y), max(1, _CELLS // max(len(y), 1))
    parts = []
    for done in range(0, samples, chunk):
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, samples - done)).astype(float)
        parts.append(sign * (fn(y, candidate, w) - fn(y, production, w)))
    out = np.concatenate(parts)
    return out[np.isfinite(out)]


def _bootstrap_test(y: np.ndarray, production: np.ndarray, candidate: np.ndarray, metric: str,
                    n_classes: int, threshold: float, alpha: float,
                    seed: int, samples: int) -> tuple[float, float, float, float, float, float]:
    fn = weighted_metric(metric, n_classes)
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    score_p, score_c = metric_value(metric, y, production, n_classes), metric_value(metric, y, candidate, n_classes)
    replicates = paired_bootstrap(y, production, candidate, fn, sign=sign, samples=samples, seed=seed)
    if not replicates.size:
        return score_p, score_c, float("nan"), float("nan"), float("nan"), 1.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    p = (1.0 + np.sum(replicates <= threshold)) / (1.0 + replicates.size)
    return score_p, score_c, sign * (score_c - score_p), float(low), float(high), float(p)


# -- the entry point -------------------------------------------------------------------------
def _as_proba(values: Any, k: int | None) -> np.ndarray:
    """An (n, k) probability matrix; a 1-d binary input is the positive-class column."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = np.column_stack([1.0 - array, array])
    if array.ndim != 2 or (k is not None and array.shape[1] != k):
        raise ValueError(f"probabilities have shape {array.shape}, expected (n, {k})")
    return array


def _classification_inputs(y_true: Any, production: Any, candidate: Any,
                           classes: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = None if classes is None else len(classes)
    prod, cand = _as_proba(production, k), _as_proba(candidate, k)
    if prod.shape != cand.shape:
        raise ValueError(f"production has shape {prod.shape} and candidate {cand.shape}")
    labels = list(range(prod.shape[1])) if classes is None else list(classes)
    return class_indices(y_true, labels), prod, cand


def _inputs(y_true: Any, production: Any, candidate: Any, classes: Sequence[Any] | None,
            regression: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if regression:
        y, prod, cand = (np.asarray(a, dtype=float).ravel() for a in (y_true, production, candidate))
    else:
        y, prod, cand = _classification_inputs(y_true, production, candidate, classes)
    if not len(y) == len(prod) == len(cand):
        raise ValueError(f"{len(y)} labels, {len(prod)} production and {len(cand)} candidate predictions")
    if not len(y):
        raise ValueError("no rows to compare")
    return y, prod, cand


def _classification_test(y: np.ndarray, prod: np.ndarray, cand: np.ndarray, metric: str,
                         threshold: float, alpha: float, seed: int, samples: int) -> tuple:
    """(test, production score, candidate score, Δ, low, high, p) of a classification metric."""
    if metric == "accuracy":
        correct_p, correct_c = _predicted_class(prod) == y, _predicted_class(cand) == y
        test, estimate, low, high, p = _accuracy_test(correct_p, correct_c, threshold, alpha)
        return test, float(correct_p.mean()), float(correct_c.mean()), estimate, low, high, p
    if metric == "roc_auc" and prod.shape[1] == 2 and 0 < y.sum() < len(y):
        auc_p, auc_c, estimate, se = delong_paired(y == 1, prod[:, 1], cand[:, 1])
        return ("delong", auc_p, auc_c, estimate, *_normal_test(estimate, se, threshold, alpha))
    return ("paired_bootstrap", *_bootstrap_test(y, prod, cand, metric, prod.shape[1], threshold, alpha, seed,
                                                 samples))


def paired_test(y_true: Any, production: Any, candidate: Any, *, metric: str, margin: float,
                alpha: float, require: str, classes: Sequence[Any] | None = None,
                seed: int = 0, bootstrap_samples: int = BOOTSTRAP_SAMPLES) -> PairedTest:
    """Test whether ``candidate`` is superior or non-inferior to ``production`` on the same rows.

    ``production`` and ``candidate`` are predicted probabilities (n × k, columns in
    ``classes`` order; default ``0..k−1``; a binary task may pass the positive column alone)
    for a classification metric, or predicted values for ``rmse``, ``mae`` and ``r2``.
    ``y_true`` holds the labels (or values). ``seed`` and ``bootstrap_samples`` drive the
    paired bootstrap (the other tests are deterministic). A ValueError names a bad argument.
    """
    _check_arguments(margin, alpha, require)
    regression = metric in ("rmse", "mae", "r2")
    y, prod, cand = _inputs(y_true, production, candidate, classes, regression)
    threshold = _threshold(require, margin)
    if regression:
        result = ("paired_bootstrap", *_bootstrap_test(y, prod, cand, metric, 0, threshold, alpha, seed,
                                                       bootstrap_samples))
    else:
        result = _classification_test(y, prod, cand, metric, threshold, alpha, seed, bootstrap_samples)
    test, score_p, score_c, estimate, low, high, p = result
    passed = bool(math.isfinite(p) and p < alpha)
    return PairedTest(metric=metric, test=test, estimate=float(estimate), low=float(low), high=float(high),
                      p_value=float(p), rows=int(len(y)), margin=float(margin), alpha=float(alpha),
                      require=require, passed=passed, candidate_score=float(score_c),
                      production_score=float(score_p))


__all__ = ["PairedTest", "REQUIREMENTS", "delong_paired", "mcnemar_exact_p", "metric_value", "paired_bootstrap",
           "paired_test", "tango_interval", "tango_z", "weighted_metric"]
