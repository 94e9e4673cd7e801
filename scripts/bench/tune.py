"""Benchmark: N search trials through Ray Tune (2 concurrent) vs one after another.

Both sides do exactly the same work: the Tune search runs first; the sequential side then
fits the very same (family, params) of every trial — including where ASHA stopped an
iterative trial — on the same split in this one process, single-threaded per fit (a
Tune trial gets 1 CPU, so each fit uses one thread on both sides).

    .venv/bin/python scripts/bench/tune.py [--trials 16] [--rows 20000]

Target on 2 CPUs: Tune wall time <= 0.62x the sequential time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

TARGET = 0.62


def synthetic_table(rows: int, seed: int = 0):
    """~20 numeric (with NaNs) + 3 categorical (with None) features and a 0/1 label."""
    from ray_mlops.data.schema import FeatureSchema

    rng = np.random.default_rng(seed)
    numeric = {f"n{i:02d}": rng.normal(0, 1, rows) for i in range(20)}
    frame = pd.DataFrame({"machine_id": [f"m-{i:06d}" for i in range(rows)], **numeric})
    frame["site"] = rng.choice(["north", "south", "east", "west", None], rows)
    frame["model"] = rng.choice(["A100", "B200", "C300", "D400"], rows)
    frame["load"] = rng.choice(["low", "medium", "high"], rows)
    logit = (frame["n00"] * frame["n01"] + np.sin(3 * frame["n02"]) + 0.5 * frame["n03"] ** 2
             - 1.5 + (frame["model"] == "D400") + 0.8 * (frame["load"] == "high"))
    frame["failed"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    for column in list(numeric)[:5]:
        frame.loc[rng.random(rows) < 0.05, column] = np.nan
    features = {c: "numeric" for c in numeric} | {c: "categorical" for c in ("site", "model", "load")}
    return frame, FeatureSchema("machine_id", "failed", "classification", features)


def bench_config(trials: int):
    from ray_mlops.config import TrainConfig

    return TrainConfig.model_validate({
        "num_samples": trials,
        "max_concurrent_trials": 2,
        "seed": 0,
        "families": {
            "hist_gradient_boosting": {"search_space": {
                "learning_rate": {"type": "loguniform", "low": 0.03, "high": 0.2},
                "max_leaf_nodes": {"type": "randint", "low": 31, "high": 64},
                "max_iter": {"type": "fixed", "value": 300},
            }},
            "random_forest": {"search_space": {
                "n_estimators": {"type": "randint", "low": 80, "high": 120},
                "max_depth": {"type": "choice", "values": [12, 16]},
            }},
        },
    })


def run_sequential(trials: pd.DataFrame, frame: pd.DataFrame, schema, config) -> float:
    """Fit every trial's exact model one after another; returns wall seconds."""
    from threadpoolctl import threadpool_limits

    from ray_mlops.train.pipelines import fit_pipeline, split_by_key
    from ray_mlops.train.search import evaluate, refit_params

    ordered = frame.sort_values(schema.entity_key, kind="stable").reset_index(drop=True)
    train, valid = split_by_key(ordered, schema.entity_key, config.validation_fraction)
    started = time.perf_counter()
    with threadpool_limits(limits=1):
        for row in trials.itertuples():
            params = refit_params(row.family, row.params, row.n_iter)
            model = fit_pipeline(schema, row.family, params, config.seed, train)
            evaluate(model, valid, schema)
    return time.perf_counter() - started


def warm_up(ray) -> None:
    """Let the just-started Ray settle (its worker pool up) before timing: cluster start-up
    is excluded on both sides, trial actor start-up and imports are counted for Tune."""

    @ray.remote(num_cpus=1)
    def ping() -> int:
        return os.getpid()

    ray.get([ping.remote() for _ in range(4)])
    time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()

    import ray

    from ray_mlops.storage import Storage
    from ray_mlops.train.search import run_search

    frame, schema = synthetic_table(args.rows)
    config = bench_config(args.trials)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="WARNING")
    warm_up(ray)
    print(f"load average before: {os.getloadavg()[0]:.2f}; {args.trials} trials, {args.rows} rows, "
          f"{len(schema.features)} features, 2 concurrent Tune trials on 2 CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = run_search(frame, schema, config, Storage(tmp), resume=False)
        search_total = time.perf_counter() - started
    ray.shutdown()
    tune_seconds = result.extra["tune_seconds"]
    sequential = run_sequential(result.trials, frame, schema, config)
    fits = result.trials["fit_seconds"]
    print(f"trials: {result.trials['family'].value_counts().to_dict()}, per-trial fit "
          f"{fits.min():.1f}-{fits.max():.1f}s in Tune; best {result.family} roc_auc={result.score:.4f}")
    print(f"sequential (one process, same {len(result.trials)} fits): {sequential:7.2f} s")
    print(f"Tune, 2 concurrent (Tuner.fit wall time):   {tune_seconds:7.2f} s")
    print(f"run_search end to end (+checks, split, refit of best): {search_total:7.2f} s")
    ratio = tune_seconds / sequential
    verdict = "meets" if ratio <= TARGET else "misses"
    print(f"ratio Tune/sequential = {ratio:.3f}  (speedup {1 / ratio:.2f}x; {verdict} target <= {TARGET})")
    print(f"ratio run_search/sequential = {search_total / sequential:.3f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
