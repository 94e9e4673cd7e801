"""Live accuracy of served answers: phases with Wilson intervals, a paired comparison, a series.

Pure Python/numpy over the answers a traffic client saw (:class:`ray_mlops.traffic.Answer`:
time, pass over the records, record index, answering version, right or not), so the
demo's figures are computed the same way in a test as in the run.

>>> wilson(140, 200).describe()
'0.7000 [0.6332, 0.7593] on 200 rows'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from scipy import stats

from ray_mlops.gate_stats import mcnemar_exact_p


class Answered(Protocol):
    """What an answer needs to carry (``ray_mlops.traffic.Answer`` has it)."""

    time: float
    pass_index: int
    index: int
    version: str
    correct: bool


@dataclass(frozen=True)
class LiveAccuracy:
    """An accuracy with its two-sided Wilson interval and the rows it is measured on."""

    estimate: float | None
    low: float | None
    high: float | None
    rows: int

    def to_json(self) -> dict[str, Any]:
        """``{"estimate", "low", "high", "rows"}``."""
        return asdict(self)

    def describe(self) -> str:
        if not self.rows:
            return "no rows"
        return f"{self.estimate:.4f} [{self.low:.4f}, {self.high:.4f}] on {self.rows} rows"


def wilson(successes: int, n: int, level: float = 0.95) -> LiveAccuracy:
    """The Wilson score interval of a proportion (None figures on no rows)."""
    if n <= 0:
        return LiveAccuracy(None, None, None, 0)
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return LiveAccuracy(p, max(0.0, centre - half), min(1.0, centre + half), n)


def select(answers: Iterable[Answered], *, version: str | None = None,
           pass_index: int | None = None) -> list[Answered]:
    """The answers of ``version`` (any when None) in pass ``pass_index`` (any when None)."""
    return [a for a in answers if (version is None or a.version == version)
            and (pass_index is None or a.pass_index == pass_index)]


def accuracy(answers: Sequence[Answered], level: float = 0.95) -> LiveAccuracy:
    """The share of correct answers with its Wilson interval."""
    return wilson(sum(bool(a.correct) for a in answers), len(answers), level)


@dataclass(frozen=True)
class LiveComparison:
    """Two versions' answers on the same labeled records; one-sided exact McNemar p (candidate better)."""

    rows: int
    production_accuracy: float | None
    candidate_accuracy: float | None
    p_value: float | None

    def to_json(self) -> dict[str, Any]:
        """``{"rows", "production_accuracy", "candidate_accuracy", "p_value"}``."""
        return asdict(self)


def paired(production: Sequence[Answered], candidate: Sequence[Answered]) -> LiveComparison:
    """Pair the two versions' answers by record index (the first answer of each) and compare."""
    first_p = {a.index: a.correct for a in reversed(production)}
    first_c = {a.index: a.correct for a in reversed(candidate)}
    both = sorted(set(first_p) & set(first_c))
    if not both:
        return LiveComparison(0, None, None, None)
    wins = sum(first_c[i] and not first_p[i] for i in both)
    losses = sum(first_p[i] and not first_c[i] for i in both)
    return LiveComparison(len(both), sum(first_p[i] for i in both) / len(both),
                          sum(first_c[i] for i in both) / len(both), mcnemar_exact_p(wins, losses))


def series(answers: Sequence[Answered], bucket_rows: int = 100, *, since: float = 0.0) -> list[dict[str, Any]]:
    """Accuracy over time: consecutive buckets of ``bucket_rows`` answers (in answer order) of one version.

    Each point: ``t`` (seconds after ``since``, at the bucket's last answer), ``accuracy``,
    ``low``, ``high`` (Wilson 95%), ``rows`` and ``version``; a bucket closes early when the
    answering version changes.
    """
    points: list[dict[str, Any]] = []
    bucket: list[Answered] = []
    for answer in sorted(answers, key=lambda a: a.time):
        if bucket and (len(bucket) >= bucket_rows or answer.version != bucket[-1].version):
            points.append(_point(bucket, since))
            bucket = []
        bucket.append(answer)
    if bucket:
        points.append(_point(bucket, since))
    return points


def _point(bucket: Sequence[Answered], since: float) -> dict[str, Any]:
    figure = accuracy(bucket)
    return {"t": round(bucket[-1].time - since, 2), "accuracy": figure.estimate, "low": figure.low,
            "high": figure.high, "rows": figure.rows, "version": bucket[-1].version}


__all__ = ["LiveAccuracy", "LiveComparison", "accuracy", "paired", "select", "series", "wilson"]
