"""One registration path: retraining registers like `ray-mlops train`, and records its split.

The monitor must read which reference rows a version never saw from the version's own
metadata (the split recorded at registration), never from today's ``train`` config.
"""

# ruff: noqa: F811  (pytest fixtures imported from monitor_fixtures are requested as arguments)
from __future__ import annotations

import io

import pandas as pd

from monitor_fixtures import fresh_storage
from serve_fixtures import fit_small_pipeline

from ray_mlops.progress import hide_progress, show_progress

LINEAGE = {"retrain", "drift_onset", "trigger_window"}


def _quick_search(calls: list):
    """A real (small) fit in the search's place: the injected trainer of a retraining."""
    from ray_mlops.train.pipelines import split_by_key
    from ray_mlops.train.search import SearchResult

    def search(frame, schema, train_config, storage, name=None, **_):
        train, valid = split_by_key(frame, schema.entity_key, train_config.validation_fraction)
        model = fit_small_pipeline(train, schema)
        accuracy = float((model.predict(valid[list(schema.features)]) == valid[schema.label]).mean())
        result = SearchResult(family="logistic_regression", params={"C": 1.0}, metrics={"accuracy": accuracy},
                              model=model, trials=pd.DataFrame({"trial": [0]}), validation=valid,
                              metric="accuracy", mode="max", seed=0, name=name or "quick",
                              experiment_path="", train_rows=len(train))
        calls.append(result)
        return result

    return search


RETRAIN_ENTITIES = 200  # the sample's sources and schema, fewer machines: a quick real re-ingest


def test_a_retrained_version_has_the_lineage_of_a_trained_one(ray_session, monitored, tmp_path):
    from ray_mlops.data.generate import GenerateSpec, generate
    from ray_mlops.data.schema import latest_ingest
    from ray_mlops.monitor.retrain import retrain
    from ray_mlops.pipeline import register_search

    config, storage, registry = fresh_storage(monitored, tmp_path)
    generate(tmp_path / "sources", GenerateSpec(entities=RETRAIN_ENTITIES, seed=5))
    config = config.model_copy(update={"data": config.data.model_copy(update={"root": str(tmp_path / "sources")})})
    calls: list = []
    stream = io.StringIO()
    handler = show_progress(stream)
    try:
        outcome = retrain(config, storage, {"id": "r1", "onset": None}, search=_quick_search(calls))
    finally:
        hide_progress(handler)
    assert outcome["status"] in ("promoted", "rejected"), outcome
    ours = [line.split("progress: ", 1)[1] for line in stream.getvalue().splitlines() if "retrain r1: " in line]
    done = [line.split(": ")[1].split(" done")[0] for line in ours if " done in " in line]
    assert done == ["ingest", "read", "prediction log", "search", "register", "gate"], ours  # no swap injected: no swap stage
    assert ours[-1].startswith(f"retrain r1: {outcome['status']} {outcome['version']} in "), ours
    retrained = registry.metadata(outcome["version"])
    trained = registry.metadata(register_search(config, storage, calls[0], latest_ingest(storage)))

    assert set(retrained["extra"]) - LINEAGE == set(trained["extra"])
    assert retrained["extra"]["retrain"] == "r1"
    split = retrained["extra"]["split"]
    assert split == {"validation_fraction": config.train.validation_fraction, "key": config.data.entity_key,
                     "key_hash": "sha1", "train_rows": calls[0].train_rows,
                     "validation_rows": len(calls[0].validation)}


def test_the_monitor_reads_the_split_from_the_version_not_the_config(monitored, tmp_path):
    from ray_mlops.monitor.core import Monitor
    from ray_mlops.train.pipelines import split_by_key

    config, storage, registry = fresh_storage(monitored, tmp_path)
    recorded = registry.metadata("v1")["extra"]["split"]["validation_fraction"]
    changed = config.model_copy(update={"train": config.train.model_copy(update={"validation_fraction": 0.6})})
    monitor = Monitor(changed, storage)
    monitor.step()
    unseen = split_by_key(monitored.reference, monitored.schema.entity_key, recorded)[1]
    assert monitor.status().reference["prediction_rows"] == len(unseen)
