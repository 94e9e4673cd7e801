"""A replica's batch path without Ray: featurize once, predict per version, the log rows (serve/batch.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ray_mlops.config import load_config
from ray_mlops.data.online import RecordError, featurize_instances
from ray_mlops.data.schema import feature_schema
from ray_mlops.serve import batch as batching
from ray_mlops.serve.model import ServedModel, _with_fast_path
from ray_mlops.serve.predlog import frame_of
from ray_mlops.train.pipelines import fit_pipeline
from test_fastpath import _raw_records


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    config = load_config(overrides={"data.root": str(root)})
    schema = feature_schema(config)
    records, labels = _raw_records(root, 80)
    records = [{k: v for k, v in r.items() if k != "machine_id"} for r in records]
    train = featurize_instances(config, records[:60], schema).assign(failed=labels[:60])
    pipeline = fit_pipeline(schema, "logistic_regression", {"C": 1.0}, 0, train)
    sample = featurize_instances(config, records[60:], schema)
    served = ServedModel("v1", pipeline, {}, "classification", [0, 1])
    return config, schema, records[60:], _with_fast_path(served, sample, served.predict(sample), schema)


def test_a_bad_job_fails_alone_and_the_others_are_predicted_in_one_batch(setup):
    config, schema, records, served = setup
    bad = {**records[3], "age_years": "old"}
    jobs = [batching.Job(records[:2], ["a", "b"], "r1"), batching.Job([bad], ["c"], "r2"),
            batching.Job(records[5:8], [None, 1, 2], "r3")]
    batch = batching.featurize(config, schema, jobs)
    assert batch.rows == 5 and batch.spans[1] is None and isinstance(batch.errors[1], RecordError)
    outcomes = batching.predict(served, batch)
    assert outcomes[1].error.field == "instances[0].age_years"
    expected = served.model.predict_proba(featurize_instances(config, records[:2] + records[5:8], schema))
    got = outcomes[0].probabilities + outcomes[2].probabilities
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_log_rows_of_several_batches_are_built_at_once_as_each_batch_would_be(setup):
    config, schema, records, served = setup
    chunks = []
    for i, version in enumerate(("v1", "v9", "v1")):
        jobs = [batching.Job(records[i * 5:i * 5 + 2], ["a", None], f"r{i}a"),
                batching.Job(records[i * 5 + 2:i * 5 + 5], [1, 2, 3], f"r{i}b")]
        batch = batching.featurize(config, schema, jobs)
        chunks.append(batching.log_chunk(batch, batching.predict(served, batch), version))
    chunks[2].extra.update(shadow_version="v2", shadow_prediction=[1] * 5)
    merged = frame_of(chunks)
    assert len(merged) == 15 and merged["model_version"].tolist() == ["v1"] * 5 + ["v9"] * 5 + ["v1"] * 5
    assert merged["request_id"].tolist()[:6] == ["r0a", "r0a", "r0b", "r0b", "r0b", "r1a"]
    assert merged["entity"].iloc[[0, 2, 4]].tolist() == ["a", "1", "3"] and pd.isna(merged["entity"].iloc[1])
    assert merged["shadow_version"].isna().sum() == 10 and (merged["shadow_version"].iloc[10:] == "v2").all()
    features = featurize_instances(config, [r for i in range(3) for r in records[i * 5:i * 5 + 5]], schema)
    pd.testing.assert_frame_equal(merged[features.columns], features)
    alone = pd.concat([chunk.frame() for chunk in chunks[:2]], ignore_index=True)
    pd.testing.assert_frame_equal(frame_of(chunks[:2]), alone)
    assert str(merged["time"].dtype).startswith("datetime64") and merged["time"].dt.tz is not None
