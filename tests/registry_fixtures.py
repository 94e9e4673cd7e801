"""Synthetic tables, small scikit-learn Pipelines and storages for registry and gate tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ray_mlops.data.schema import FeatureSchema
from ray_mlops.storage import Storage

NUMERIC = ["temp", "vibration", "age"]
CATEGORICAL = ["model", "site"]
SCHEMA = FeatureSchema(
    entity_key="machine_id",
    label="failed",
    task="classification",
    features={**{n: "numeric" for n in NUMERIC}, **{c: "categorical" for c in CATEGORICAL}},
)
REGRESSION_SCHEMA = FeatureSchema("machine_id", "hours_left", "regression", dict(SCHEMA.features))


def make_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A seeded table with NaNs and categories whose label depends on the features."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "machine_id": [f"m{i:05d}" for i in range(n)],
        "temp": rng.normal(60, 10, n),
        "vibration": rng.gamma(2.0, 1.0, n),
        "age": rng.uniform(0, 20, n),
        "model": rng.choice(["A100", "B200", "C300"], n),
        "site": rng.choice(["north", "south"], n),
    })
    signal = 0.15 * (frame.temp - 60) + 0.8 * (frame.vibration - 2) + 1.2 * (frame.model == "C300")
    frame["failed"] = (signal + rng.logistic(0, 0.5, n) > 0.6).astype(int)
    frame["hours_left"] = 500 - 8 * frame.temp - 30 * frame.vibration + rng.normal(0, 5, n)
    frame.loc[frame.index % 13 == 0, "temp"] = np.nan
    frame.loc[frame.index % 17 == 0, "site"] = np.nan
    return frame


def preprocessor(numeric=NUMERIC, categorical=CATEGORICAL) -> ColumnTransformer:
    return ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                          ("onehot", OneHotEncoder(handle_unknown="ignore"))]), categorical),
    ])


ESTIMATORS = {
    "logreg": lambda: LogisticRegression(max_iter=500),
    "hgb": lambda: HistGradientBoostingClassifier(max_iter=30, early_stopping=True, random_state=0),
    "forest": lambda: RandomForestClassifier(n_estimators=20, random_state=0),
}


def fit_pipeline(frame: pd.DataFrame, family: str = "logreg", *, label: str = "failed",
                 shuffle_labels: bool = False, estimator=None) -> Pipeline:
    y = frame[label].to_numpy()
    if shuffle_labels:
        y = np.random.default_rng(1).permutation(y)
    pipeline = Pipeline([("pre", preprocessor()), ("est", estimator or ESTIMATORS[family]())])
    return pipeline.fit(frame[NUMERIC + CATEGORICAL], y)


def fit_weak(frame: pd.DataFrame) -> Pipeline:
    """A real but weak classifier: it sees neither temperature nor vibration."""
    pipeline = Pipeline([("pre", preprocessor(numeric=["age"])), ("est", LogisticRegression())])
    return pipeline.fit(frame[["age"] + CATEGORICAL], frame["failed"])


def fit_regressor(frame: pd.DataFrame, *, shuffle_labels: bool = False) -> Pipeline:
    return fit_pipeline(frame, label="hours_left", shuffle_labels=shuffle_labels, estimator=Ridge())


REGISTER_ARGS = dict(params={"C": 1.0}, metrics={"roc_auc": 0.9}, data_fingerprint="fp-1", config_hash="cfg-1")


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Storage:
    """The same tests on a local folder and on the loopback S3 server."""
    if request.param == "local":
        return Storage(str(tmp_path / "store"))
    return Storage(request.getfixturevalue("s3_bucket"))
