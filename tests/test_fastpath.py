"""The compiled serving path gives the registered Pipeline's own outputs (no Ray).

Every built-in family's Pipeline (numeric with indicators, vectors, categorical with
"missing" levels, TF-IDF text) and the serving tests' small Pipeline are compiled and
compared with ``predict_proba`` / ``predict`` on rows the fit never saw: missing numbers,
``None`` and NaN levels, unknown levels, empty text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from ray_mlops.data.schema import FeatureRows, FeatureSchema, cast_features, feature_rows
from ray_mlops.serve.fastpath import compile_pipeline
from ray_mlops.serve.model import ServedModel, _with_fast_path
from ray_mlops.train.estimators import families
from ray_mlops.train.pipelines import fit_pipeline
from serve_fixtures import fit_small_pipeline

WORDS = ["belt", "leak", "worn", "noise", "seal", "ok", "hot", "fan"]


def _schema(task: str) -> FeatureSchema:
    features = {"a": "numeric", "b": "numeric", "v0": "vector", "v1": "vector",
                "site": "categorical", "model": "categorical", "notes": "text"}
    return FeatureSchema("id", "y", task, features, "int" if task == "classification" else "float")


def _frame(n: int, seed: int, unseen: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    a[rng.random(n) < 0.2] = np.nan
    sites = np.array(["S1", "S2", "S3", None, "S9" if unseen else "S1"], dtype=object)[rng.integers(0, 5, n)]
    notes = [" ".join(rng.choice(WORDS, rng.integers(0, 5))) for _ in range(n)]
    frame = pd.DataFrame({"a": a, "b": rng.normal(size=n), "v0": rng.random(n), "v1": rng.random(n),
                          "site": sites, "model": rng.choice(["A", "B", "Z" if unseen else "A"], n), "notes": notes})
    frame["y"] = (np.nan_to_num(a) + (sites == "S2") + rng.normal(scale=0.5, size=n) > 0.3).astype(int)
    return frame


def _features(frame: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    return cast_features(frame.drop(columns=["y"]), schema)[list(schema.features)]


@pytest.mark.parametrize("task,family", [("classification", f) for f in families("classification")]
                         + [("regression", f) for f in families("regression")])
def test_every_family_compiles_to_the_same_outputs(task, family):
    schema = _schema(task)
    train, unseen = _frame(400, 1), _frame(120, 2, unseen=True)
    if task == "regression":
        train["y"] = train["a"].fillna(0) * 3 + train["b"]
    pipeline = fit_pipeline(schema, family, {}, 0, train)
    fast = compile_pipeline(pipeline)
    assert fast is not None
    X = _features(unseen, schema)
    rows = feature_rows(X, len(X), schema)  # what a replica featurizes into: no frame
    if task == "classification":
        np.testing.assert_allclose(fast.predict_proba(X), pipeline.predict_proba(X), rtol=0, atol=1e-12)
        np.testing.assert_allclose(fast.predict_proba(rows), pipeline.predict_proba(X), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.predict(X), pipeline.predict(X), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.predict(rows), pipeline.predict(X), rtol=0, atol=1e-12)
    assert [np.isnan(X["a"]).any(), X["site"].isna().any(), (X["site"] == "S9").any()] == [True, True, True]


def _levels_only(frame: pd.DataFrame) -> pd.DataFrame:
    """The serving tests' Pipeline imputes ``None`` only (its tables have no missing levels)."""
    return frame.assign(site=frame["site"].fillna("S1"))


def test_the_serving_tests_pipeline_compiles_and_the_served_model_uses_it():
    schema = FeatureSchema("id", "y", "classification", {"a": "numeric", "b": "numeric", "site": "categorical"})
    model = fit_small_pipeline(_levels_only(_frame(300, 3)), schema)
    X = _features(_levels_only(_frame(50, 4, unseen=True)), schema)
    served = ServedModel("v1", model, {}, "classification", [0, 1])
    fast = _with_fast_path(served, X, served.predict(X))
    assert fast.fast is not None
    assert fast.predict(X) == served.predict(X)
    np.testing.assert_array_equal(fast.fast.predict_proba(X), model.predict_proba(X))


def test_an_unknown_first_step_or_a_disagreeing_path_serves_the_pipeline_itself_and_other_branches_run_as_fitted():
    schema = FeatureSchema("id", "y", "classification", {"a": "numeric", "b": "numeric", "site": "categorical"})
    train = _levels_only(_frame(200, 5))
    X = _features(train, schema)
    plain = Pipeline([("scale", FunctionTransformer(lambda f: f[["a", "b"]].fillna(0))),
                      ("model", LogisticRegression())]).fit(X, train["y"])
    assert compile_pipeline(plain) is None
    passthrough = Pipeline([("features", ColumnTransformer([("num", "passthrough", ["b"])])),
                            ("model", LogisticRegression())]).fit(X, train["y"])
    np.testing.assert_array_equal(compile_pipeline(passthrough).predict_proba(X), passthrough.predict_proba(X))
    model = fit_small_pipeline(train, schema)
    served = ServedModel("v1", model, {}, "classification", [0, 1])
    wrong = served.predict(X.iloc[:10])
    wrong = type(wrong)(wrong.predictions, [[1.0, 0.0]] * 10)  # outputs the compiled path cannot reproduce
    assert _with_fast_path(served, X.iloc[:10], wrong).fast is None


def test_feature_rows_hold_what_the_frame_holds():
    """Columns, blocks, row subsets and concatenations of FeatureRows equal the frame's (NaN where pandas has NaN)."""
    schema = _schema("classification")
    frame = _frame(40, 6)
    frame.loc[::4, "site"] = None
    columns = {**{c: frame[c].to_numpy() for c in frame.columns}, "model": np.full(40, None, dtype=object)}
    rows = feature_rows(columns, 40, schema)
    expected = cast_features(pd.DataFrame(columns), schema)
    pd.testing.assert_frame_equal(rows.frame(), expected)
    for name in schema.features:
        got, want = rows.column(name), expected[name].to_numpy(dtype=object if name in ("site", "model", "notes") else None)
        assert [type(v) for v in got] == [type(v) for v in want], name
        np.testing.assert_array_equal(pd.isna(got), pd.isna(want))
    np.testing.assert_array_equal(rows.block(["a", "v1"]), expected[["a", "v1"]].to_numpy())
    mixed = rows.block(["b", "site"])
    assert mixed.dtype == object and [type(v) for v in mixed[:, 1]] == [type(v) for v in expected["site"].to_numpy(dtype=object)]
    parts = FeatureRows.concat([rows.take(slice(0, 10)), rows.take(np.array([30, 31, 5]))])
    pd.testing.assert_frame_equal(parts.frame(), pd.concat([expected.iloc[:10], expected.iloc[[30, 31, 5]]], ignore_index=True))


def _raw_records(root, entities: int) -> tuple[list[dict], np.ndarray]:
    """Raw request records of every modality (table, events, text, image, time series) and their labels."""
    from types import SimpleNamespace

    from ray_mlops.data.generate import GenerateSpec, generate
    from serve_fixtures import raw_instances

    generate(root, GenerateSpec(entities=entities, seed=4))
    records = raw_instances(SimpleNamespace(data_root=root), entities, seed=8)
    labels = pd.read_csv(root / "labels.csv").set_index("machine_id")["failed"]
    return records, labels.loc[[r["machine_id"] for r in records]].to_numpy()


def test_the_served_path_equals_the_pipeline_on_raw_records_of_every_modality(tmp_path):
    """Featurize raw records as a replica does (FeatureRows, one call per batch) and predict through the compiled
    path: the registered Pipeline's own probabilities on the same records' feature frame, with a TF-IDF text step."""
    from ray_mlops.config import load_config
    from ray_mlops.data.online import featurize_instances, featurize_rows
    from ray_mlops.data.schema import feature_schema
    from ray_mlops.serve import batch as batching

    config = load_config(overrides={"data.root": str(tmp_path)})
    schema = feature_schema(config)
    assert {"numeric", "categorical", "text"} <= set(schema.features.values())
    records, labels = _raw_records(tmp_path, 160)
    records = [{k: v for k, v in r.items() if k != "machine_id"} for r in records]
    assert all(r["images"] and r["notes"] and r["telemetry"] and r["events"] for r in records[:5])
    train = featurize_instances(config, records[:120], schema).assign(failed=labels[:120])
    pipeline = fit_pipeline(schema, "logistic_regression", {"C": 1.0}, 0, train)
    served = ServedModel("v1", pipeline, {}, "classification", [0, 1])
    sample = featurize_instances(config, records[120:], schema)
    served = _with_fast_path(served, sample, served.predict(sample), schema)
    assert served.fast is not None
    jobs = [batching.Job(records[i:i + 8], [None] * 8, f"r{i}") for i in range(120, 160, 8)]
    outcomes = batching.predict(served, batching.featurize(config, schema, jobs))
    expected = pipeline.predict_proba(sample)
    np.testing.assert_allclose([p for o in outcomes for p in o.probabilities], expected, rtol=0, atol=1e-6)
    assert [p for o in outcomes for p in o.predictions] == expected.argmax(axis=1).tolist()
    one = featurize_rows(config, records[150:151], schema)
    np.testing.assert_array_equal(served.fast.predict_proba(one), pipeline.predict_proba(sample.iloc[30:31]))
