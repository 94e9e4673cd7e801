"""A small seeded table and a shrunk train config: for training and Tune tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ray_mlops.config import TrainConfig
from ray_mlops.data.schema import FeatureSchema

FEATURES = {"temp": "numeric", "vib": "numeric", "age": "numeric", "site": "categorical", "model": "categorical"}


def make_table(n: int = 300, seed: int = 0, task: str = "classification") -> tuple[pd.DataFrame, FeatureSchema]:
    """A small seeded table with NaNs in numeric columns and None in categorical ones."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "machine_id": [f"m-{i:05d}" for i in range(n)],
        "temp": rng.normal(60, 10, n),
        "vib": rng.gamma(2.0, 1.0, n),
        "age": rng.uniform(0, 20, n),
        "site": rng.choice(["north", "south", "east", None], n),
        "model": rng.choice(["A100", "B200", "C300"], n),
    })
    frame.loc[rng.random(n) < 0.1, "temp"] = np.nan
    frame.loc[rng.random(n) < 0.1, "vib"] = np.nan
    score = 0.08 * (frame["temp"].fillna(60) - 60) + 0.8 * frame["vib"].fillna(2) + (frame["model"] == "C300")
    if task == "classification":
        frame["failed"] = (score + rng.normal(0, 0.7, n) > 2.2).astype(int)
    else:
        frame["failed"] = score + rng.normal(0, 0.3, n)
    return frame, FeatureSchema("machine_id", "failed", task, dict(FEATURES))


def tiny_config(**changes) -> TrainConfig:
    """Default families, shrunk so that every trial fits in well under a second."""
    families_ = {
        "logistic_regression": {"search_space": {"C": {"type": "loguniform", "low": 0.01, "high": 10.0}}},
        "hist_gradient_boosting": {"search_space": {
            "learning_rate": {"type": "loguniform", "low": 0.05, "high": 0.3},
            "max_leaf_nodes": {"type": "randint", "low": 4, "high": 16},
            "max_iter": {"type": "fixed", "value": 8},
        }},
        "random_forest": {"search_space": {
            "n_estimators": {"type": "randint", "low": 5, "high": 15},
            "max_depth": {"type": "choice", "values": [3, 6, None]},
        }},
    }
    raw = {"families": families_, "num_samples": 4, "max_concurrent_trials": 2, "seed": 7, "max_failures": 1}
    raw.update(changes)
    return TrainConfig.model_validate(raw)
