"""Benchmark: false alarms and power of DriftDetector vs per-column KS + Bonferroni.

Real data that ships with scikit-learn (nothing downloaded): breast cancer, wine, digits
and diabetes. Each dataset gets one categorical column (its most varied numeric feature
cut into four quantile levels, ``<name>_level``), so the categorical tests are measured
too. 20 % of the rows (seeded, fixed) train a model (logistic regression, or ridge for
diabetes): the "production model" of the model-output view. On every trial the other
rows are permuted; the reference is one half (or what is left beside a larger window)
and the window is drawn from the other half, so reference and window never share a row
and, without a shift, are exchangeable.

Shifts (Rabanser, Günnemann & Lipton, *Failing Loudly*, NeurIPS 2019, adapted to tables),
each at three intensities (small / medium / large), applied to the window only:

* ``gaussian_noise`` — N(0, (s·σ)²) added to a random half of the numeric features.
* ``feature_shift`` / ``feature_scale`` — one random feature moved by s·σ / scaled by s
  about its mean.
* ``knockout`` — one random feature stuck at its median in a share s of the rows.
* ``class_removal`` — a share s of one class's rows removed (a class-prior change).
* ``level_inflation`` — one level of the categorical column s times as frequent
  (rows re-weighted, so the other features move with it).

Methods (one reference, one window, every method in the same run):

* ``ours`` — ``DriftDetector(reference)`` with its defaults.
* ``ks_bonf`` — the textbook baseline: ``scipy.stats.ks_2samp`` per numeric column,
  ``chi2_contingency`` on the categorical column, Bonferroni.
* ``ours+model`` — ``DriftDetector(reference, model=model)``: the inputs plus the
  model's outputs in one family.
* ``bbsd`` — black-box shift detection as in the paper: ``ks_2samp`` on each predicted
  probability column (the prediction for regression), Bonferroni. It sees only shifts
  that move the model's outputs, and a regularized linear model on standardized features
  barely moves under these covariate shifts: its low power here is the method, not a
  bug (checked: the model never saw a reference or window row, the window's outputs are
  recomputed on the shifted features, no output ties, ``ks_2samp(axis=0)`` equals a
  per-column loop; moving breast cancer's largest-coefficient feature by 0.8 sd gives
  bbsd 0.12 power at window 100, while class removal, which moves the outputs, gives 1.0).

    python scripts/bench/drift_power.py            # full: windows 10..1000, 100 trials a cell
    python scripts/bench/drift_power.py --quick    # window 100 only, fewer trials
    python scripts/bench/drift_power.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import datasets
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ray_mlops.monitor.drift import DriftDetector

ALPHA = 0.05
TRAIN_SHARE = 0.2
INTENSITIES = ("small", "medium", "large")
WINDOWS_FULL = (10, 30, 100, 300, 1000)
WINDOWS_QUICK = (100,)
METHODS = ("ours", "ks_bonf", "ours+model", "bbsd")
BASE_METHODS = len(METHODS)


# ---------------------------------------------------------------- datasets

@dataclass
class Dataset:
    """One real dataset, split into a model-training fold and a pool of rows."""

    name: str
    frame: pd.DataFrame  # the pool: numeric columns + one categorical column
    target: np.ndarray  # the pool's labels (classification) or values (regression)
    classification: bool
    categorical: str
    model: object = None
    sd: pd.Series = field(default_factory=pd.Series)
    median: pd.Series = field(default_factory=pd.Series)
    integer: pd.Series = field(default_factory=pd.Series)
    outputs: pd.DataFrame = field(default_factory=pd.DataFrame)  # the model's, on the pool

    @property
    def numeric(self) -> list[str]:
        return [c for c in self.frame.columns if c != self.categorical]

    @property
    def continuous(self) -> list[str]:
        """Numeric features with at least 10 distinct values (the ones shifts move)."""
        return [c for c in self.numeric if self.frame[c].nunique() >= 10]

    def movable(self, rng: np.random.Generator) -> str:
        """A random continuous feature."""
        return str(rng.choice(self.continuous))

    def settle(self, frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        """Round moved integer-valued columns back to integers (a pixel stays a pixel)."""
        for c in columns:
            if self.integer[c]:
                frame[c] = np.round(frame[c])
        return frame


def _with_level_column(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Cut the most varied numeric column into four quantile levels (a categorical)."""
    source = max(frame.columns, key=lambda c: (frame[c].nunique(), c))
    name = f"{source}_level"
    codes = pd.qcut(frame[source].rank(method="first"), 4, labels=False)
    out = frame.drop(columns=[source])
    out[name] = np.array(["q1", "q2", "q3", "q4"], dtype=object)[codes.to_numpy()]
    return out, name


def _fit_model(frame: pd.DataFrame, target: np.ndarray, categorical: str,
               classification: bool) -> object:
    numeric = [c for c in frame.columns if c != categorical]
    prep = ColumnTransformer([("num", StandardScaler(), numeric),
                              ("cat", OneHotEncoder(handle_unknown="ignore"), [categorical])])
    head = LogisticRegression(max_iter=2000) if classification else Ridge(alpha=1.0)
    return make_pipeline(prep, head).fit(frame, target)


def load(name: str) -> Dataset:
    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
              "digits": datasets.load_digits, "diabetes": datasets.load_diabetes}[name]
    bunch = loader(as_frame=True)
    frame, categorical = _with_level_column(bunch.data.astype(float))
    target = bunch.target.to_numpy()
    classification = name != "diabetes"
    order = np.random.default_rng(12345).permutation(len(frame))
    n_train = int(TRAIN_SHARE * len(frame))
    train, pool = order[:n_train], order[n_train:]
    model = _fit_model(frame.iloc[train], target[train], categorical, classification)
    data = frame.iloc[pool].reset_index(drop=True)
    numeric = [c for c in data.columns if c != categorical]
    ds = Dataset(name, data, target[pool], classification, categorical, model,
                 data[numeric].std(), data[numeric].median(),
                 (data[numeric] == np.round(data[numeric])).all())
    ds.outputs = model_outputs(ds, data)
    return ds


# ---------------------------------------------------------------- shifts

@dataclass(frozen=True)
class Shift:
    """A named shift: intensities, an optional row weighting and a frame transform."""

    name: str
    levels: tuple[float, float, float]
    weights: Callable[[Dataset, np.ndarray, np.random.Generator, float], np.ndarray] | None = None
    transform: Callable[[Dataset, pd.DataFrame, np.random.Generator, float], pd.DataFrame] | None = None
    needs_classes: bool = False


def _noise(ds: Dataset, w: pd.DataFrame, rng: np.random.Generator, s: float) -> pd.DataFrame:
    cols = ds.continuous
    moved = list(rng.choice(cols, size=max(1, len(cols) // 2), replace=False))
    for c in moved:
        w[c] = w[c] + rng.normal(0.0, s * ds.sd[c], len(w))
    return ds.settle(w, moved)


def _shift(ds: Dataset, w: pd.DataFrame, rng: np.random.Generator, s: float) -> pd.DataFrame:
    c = ds.movable(rng)
    w[c] = w[c] + s * ds.sd[c]
    return ds.settle(w, [c])


def _scale(ds: Dataset, w: pd.DataFrame, rng: np.random.Generator, s: float) -> pd.DataFrame:
    c = ds.movable(rng)
    mean = ds.frame[c].mean()
    w[c] = mean + (w[c] - mean) * s
    return ds.settle(w, [c])


def _knockout(ds: Dataset, w: pd.DataFrame, rng: np.random.Generator, s: float) -> pd.DataFrame:
    c = ds.movable(rng)
    w.loc[rng.random(len(w)) < s, c] = ds.median[c]
    return w


def _class_removal(ds: Dataset, rows: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    labels = ds.target[rows]
    return np.where(labels == rng.choice(np.unique(ds.target)), 1.0 - s, 1.0)


def _level_inflation(ds: Dataset, rows: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    levels = ds.frame[ds.categorical].to_numpy()[rows]
    return np.where(levels == rng.choice(np.unique(levels)), s, 1.0)


SHIFTS = (
    Shift("gaussian_noise", (0.05, 0.15, 0.4), transform=_noise),
    Shift("feature_shift", (0.2, 0.4, 0.8), transform=_shift),
    Shift("feature_scale", (1.2, 1.5, 2.0), transform=_scale),
    Shift("knockout", (0.1, 0.2, 0.4), transform=_knockout),
    Shift("class_removal", (0.5, 0.8, 1.0), weights=_class_removal, needs_classes=True),
    Shift("level_inflation", (1.5, 2.0, 3.0), weights=_level_inflation),
)


# ---------------------------------------------------------------- one trial

def _draw_rows(candidates: np.ndarray, size: int, weights: np.ndarray | None,
               rng: np.random.Generator) -> np.ndarray | None:
    """``size`` distinct rows, with probability proportional to ``weights``."""
    if weights is None:
        return candidates[:size]
    keep = weights > 0
    if keep.sum() < size:
        return None
    p = weights[keep] / weights[keep].sum()
    return rng.choice(candidates[keep], size=size, replace=False, p=p)


@dataclass
class Pair:
    """One trial's reference and window, with the model's outputs on each."""

    reference: pd.DataFrame
    window: pd.DataFrame
    reference_outputs: pd.DataFrame
    window_outputs: pd.DataFrame


def split(ds: Dataset, window: int, shift: Shift | None, level: float,
          rng: np.random.Generator) -> Pair | None:
    """(reference, window) for one trial; None when the pool is too small."""
    n = len(ds.frame)
    n_ref = min(n // 2, n - window)
    if n_ref < 20:
        return None
    order = rng.permutation(n)
    ref_rows, rest = order[:n_ref], order[n_ref:]
    weights = shift.weights(ds, rest, rng, level) if shift and shift.weights else None
    win_rows = _draw_rows(rest, window, weights, rng)
    if win_rows is None or len(win_rows) < window:
        return None
    reference = ds.frame.iloc[ref_rows].reset_index(drop=True)
    win = ds.frame.iloc[win_rows].reset_index(drop=True)
    win_out = ds.outputs.iloc[win_rows].reset_index(drop=True)
    if shift and shift.transform:
        win = shift.transform(ds, win, rng, level)
        win_out = model_outputs(ds, win)
    return Pair(reference, win, ds.outputs.iloc[ref_rows].reset_index(drop=True), win_out)


def _scipy_family(ref: pd.DataFrame, win: pd.DataFrame, categorical: list[str]) -> float:
    """Bonferroni family p-value of ks_2samp / chi2_contingency per column (the baseline)."""
    numeric = [c for c in ref.columns if c not in categorical]
    p = list(np.atleast_1d(stats.ks_2samp(ref[numeric].to_numpy(), win[numeric].to_numpy(),
                                          axis=0).pvalue))  # one ks_2samp per column
    for name in categorical:
        counts = pd.concat([ref[name].value_counts(), win[name].value_counts()], axis=1)
        table = counts.fillna(0).to_numpy().T
        p.append(stats.chi2_contingency(table).pvalue if table.shape[1] > 1 else 1.0)
    return min(1.0, min(p) * len(p))


def model_outputs(ds: Dataset, frame: pd.DataFrame) -> pd.DataFrame:
    """The model's outputs: P(class 1) for two classes, every class's probability
    otherwise, the prediction for regression."""
    if not ds.classification:
        return pd.DataFrame({"prediction": ds.model.predict(frame)})
    proba = ds.model.predict_proba(frame)
    proba = proba[:, 1:] if proba.shape[1] == 2 else proba
    return pd.DataFrame(proba, columns=[f"p{i}" for i in range(proba.shape[1])])


#: Candidate settings measured beside the defaults with ``--candidates`` (name: options).
CANDIDATES = {"no_point_mass": {"point_mass": False}}


def decide(ds: Dataset, pair: Pair) -> dict[str, bool]:
    """Every method's verdict on one (reference, window) pair."""
    cats = [ds.categorical]
    ref, win = pair.reference, pair.window
    out = {"ours": DriftDetector(ref, alpha=ALPHA, categorical=cats).test(win).drift,
           "ks_bonf": _scipy_family(ref, win, cats) <= ALPHA}
    out["ours+model"] = DriftDetector(ref, alpha=ALPHA, categorical=cats,
                                      model=ds.model).test(win).drift
    out["bbsd"] = _scipy_family(pair.reference_outputs, pair.window_outputs, []) <= ALPHA
    for name in METHODS[BASE_METHODS:]:  # --candidates
        out[name] = DriftDetector(ref, alpha=ALPHA, categorical=cats,
                                  **CANDIDATES[name]).test(win).drift
    return out


# ---------------------------------------------------------------- cells

@dataclass
class Cell:
    """Rejection counts of every method in one (dataset, shift, intensity, window)."""

    dataset: str
    shift: str
    intensity: str
    window: int
    trials: int = 0
    rejections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METHODS, 0))

    def rate(self, method: str) -> float:
        return self.rejections[method] / self.trials if self.trials else float("nan")


def run_cell(ds: Dataset, shift: Shift | None, intensity: int, window: int, trials: int,
             seed: int) -> Cell | None:
    name = shift.name if shift else "none"
    cell = Cell(ds.name, name, INTENSITIES[intensity] if shift else "-", window)
    level = shift.levels[intensity] if shift else 0.0
    for t in range(trials):
        key = [seed, sum(map(ord, ds.name)), sum(map(ord, name)), intensity, window, t]
        rng = np.random.default_rng(np.random.SeedSequence(key))
        pair = split(ds, window, shift, level, rng)
        if pair is None:
            return None
        for method, drift in decide(ds, pair).items():
            cell.rejections[method] += bool(drift)
        cell.trials += 1
    return cell


def far_interval(rejections: int, trials: int) -> tuple[float, float]:
    """Clopper–Pearson 95 % interval of a false-alarm rate."""
    ci = stats.binomtest(rejections, trials).proportion_ci(0.95)
    return float(ci.low), float(ci.high)


def far_limit(trials: int) -> float:
    """The largest false-alarm rate a calibrated test shows with 99 % probability."""
    return float(stats.binom.ppf(0.99, trials, ALPHA) / trials)


# ---------------------------------------------------------------- report

def _mean(cells: list[Cell], method: str) -> float:
    return float(np.mean([c.rate(method) for c in cells])) if cells else float("nan")


def print_report(cells: list[Cell], out=sys.stdout) -> dict[str, float]:
    null = [c for c in cells if c.shift == "none"]
    print(f"false alarms at alpha={ALPHA} (limit = 99% binomial quantile of a calibrated "
          "test)", file=out)
    print(f"  {'dataset':<14}{'window':>7}{'trials':>7}" + "".join(f"{m:>12}" for m in METHODS)
          + f"{'limit':>8}   ours 95% CI", file=out)
    for c in null:
        low, high = far_interval(c.rejections["ours"], c.trials)
        print(f"  {c.dataset:<14}{c.window:>7}{c.trials:>7}"
              + "".join(f"{c.rate(m):>12.3f}" for m in METHODS)
              + f"{far_limit(c.trials):>8.3f}   [{low:.3f}, {high:.3f}]", file=out)
    print("\npower", file=out)
    print(f"  {'dataset':<14}{'shift':<17}{'int.':<8}{'window':>7}"
          + "".join(f"{m:>12}" for m in METHODS), file=out)
    shifted = [c for c in cells if c.shift != "none"]
    for c in shifted:
        print(f"  {c.dataset:<14}{c.shift:<17}{c.intensity:<8}{c.window:>7}"
              + "".join(f"{c.rate(m):>12.3f}" for m in METHODS), file=out)
    return summarize(null, shifted, out)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def summarize(null: list[Cell], shifted: list[Cell], out) -> dict[str, float]:
    summary: dict[str, float] = {}
    print("\nsummary", file=out)
    for label, pick in (("window 100, medium", lambda c: c.window == 100 and c.intensity == "medium"),
                        ("window 100, all intensities", lambda c: c.window == 100),
                        ("all windows and intensities", lambda c: True)):
        chosen = [c for c in shifted if pick(c)]
        if not chosen:
            continue
        rates = {m: _mean(chosen, m) for m in METHODS}
        print(f"  mean power, {label} ({len(chosen)} cells): "
              + ", ".join(f"{m} {r:.3f}" for m, r in rates.items())
              + f"; ratio ours/ks_bonf {_ratio(rates['ours'], rates['ks_bonf'])}, "
              f"ours+model/ks_bonf {_ratio(rates['ours+model'], rates['ks_bonf'])}, "
              f"ours+model/bbsd {_ratio(rates['ours+model'], rates['bbsd'])}", file=out)
        key = label.replace(", ", "_").replace(" ", "_")
        summary.update({f"power_{key}_{m}": r for m, r in rates.items()})
    worst = {m: max((c.rate(m) - far_limit(c.trials) for c in null), default=0.0)
             for m in METHODS}
    over = {m: [f"{c.dataset}/{c.window}" for c in null if c.rate(m) > far_limit(c.trials)]
            for m in METHODS}
    for m in METHODS:
        summary[f"max_far_{m}"] = max((c.rate(m) for c in null), default=float("nan"))
        print(f"  {m:<11} max false-alarm rate {summary[f'max_far_{m}']:.3f}; cells over "
              f"the limit: {over[m] or 'none'} (worst margin {worst[m]:+.3f})", file=out)
    return summary


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="window 100 only, fewer trials")
    parser.add_argument("--trials", type=int, default=None, help="trials per shifted cell")
    parser.add_argument("--null-trials", type=int, default=None, help="trials per null cell")
    parser.add_argument("--datasets", default="breast_cancer,wine,digits,diabetes")
    parser.add_argument("--windows", default=None, help="comma-separated window sizes")
    parser.add_argument("--shifts", default=None, help="comma-separated shift names "
                        "(default all; 'none' runs the null cells only)")
    parser.add_argument("--candidates", action="store_true",
                        help=f"also measure the candidate settings {sorted(CANDIDATES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write every cell and the summary")
    return parser.parse_args(argv)


def _cells(ds: Dataset, windows: tuple[int, ...], shifts: list[Shift], trials: int,
           null_trials: int, seed: int) -> list[Cell | None]:
    cells = []
    for window in windows:
        cells.append(run_cell(ds, None, 0, window, null_trials, seed))
        for shift in shifts:
            if shift.needs_classes and not ds.classification:
                continue
            cells += [run_cell(ds, shift, i, window, trials, seed)
                      for i in range(len(INTENSITIES))]
    return cells


def main(argv: list[str] | None = None) -> int:
    global METHODS
    args = _arguments(argv)
    if args.candidates:
        METHODS = METHODS[:BASE_METHODS] + tuple(CANDIDATES)
    trials = args.trials or 100
    null_trials = args.null_trials or (200 if args.quick else 500)
    windows = (tuple(int(w) for w in args.windows.split(",")) if args.windows
               else WINDOWS_QUICK if args.quick else WINDOWS_FULL)
    names = args.shifts.split(",") if args.shifts else [s.name for s in SHIFTS]
    shifts = [s for s in SHIFTS if s.name in names]
    start = time.perf_counter()
    cells: list[Cell | None] = []
    for name in args.datasets.split(","):
        cells += _cells(load(name), windows, shifts, trials, null_trials, args.seed)
    cells = [c for c in cells if c is not None]
    summary = print_report(cells)
    print(f"\n{len(cells)} cells, {sum(c.trials for c in cells)} trials in "
          f"{time.perf_counter() - start:.0f} s", file=sys.stdout)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"alpha": ALPHA, "summary": summary,
                       "cells": [asdict(c) for c in cells]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
