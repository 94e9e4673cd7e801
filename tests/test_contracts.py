"""The contract serve and the monitor share is defined once, in ray_mlops.contracts (no Ray)."""

from __future__ import annotations

import pathlib

import pandas as pd
import pytest

import ray_mlops
from ray_mlops import contracts
from ray_mlops.storage import Storage

PACKAGE = pathlib.Path(ray_mlops.__file__).parent


def test_serve_and_monitor_use_the_same_objects():
    from ray_mlops.monitor import actor, store
    from ray_mlops.serve import predlog

    assert predlog.PartitionedWriter is contracts.PartitionedWriter
    assert predlog.read_log is contracts.read_log
    assert (predlog.PREDICTIONS_DIR, predlog.FEEDBACK_DIR) == (contracts.PREDICTIONS_DIR, contracts.FEEDBACK_DIR)
    assert predlog.MONITOR_ACTOR is actor.MONITOR_ACTOR is contracts.MONITOR_ACTOR
    assert store.record_keys is contracts.record_keys and store.parquet_bytes is contracts.parquet_bytes
    assert set(contracts.REQUIRED_META) <= set(contracts.META_COLUMNS)


def test_no_shared_literal_is_defined_twice():
    definitions = {"MONITOR_ACTOR =": 0, "PREDICTIONS_DIR =": 0, "FEEDBACK_DIR =": 0, "META_COLUMNS =": 0,
                   "REQUIRED_META =": 0, "def parquet_bytes": 0, "def record_keys": 0, "def partition_of": 0,
                   "class PartitionedWriter": 0, "def read_partitioned": 0, "def read_log": 0}
    for path in PACKAGE.rglob("*.py"):
        for line in path.read_text().splitlines():
            for definition in definitions:
                if line.startswith(definition) or line.strip().startswith(definition):
                    definitions[definition] += 1
    assert definitions == {d: 1 for d in definitions}
    uses = [p for p in PACKAGE.rglob("*.py") if '"ray_mlops_monitor"' in p.read_text()]
    assert uses == [PACKAGE / "contracts.py"]


@pytest.fixture(params=["local", "s3"])
def log_storage(request, tmp_path) -> Storage:
    """Local disk, or a fresh bucket on the loopback S3 server (one PUT per file there, no folder markers)."""
    if request.param == "local":
        return Storage(str(tmp_path))
    return Storage(request.getfixturevalue("s3_bucket"))


def test_the_writer_and_the_readers_agree(log_storage):
    storage = log_storage
    times = pd.to_datetime(["2026-11-27T09:10:00Z", "2026-11-27T09:50:00Z", "2026-11-27T10:05:00Z"])
    frame = pd.DataFrame({"request_id": ["a", "a", "b"], "row": [0, 1, 0], "label": [1, 0, 1], "time": times})
    written = contracts.PartitionedWriter(storage, contracts.FEEDBACK_DIR, "w").write(frame)
    assert written == ["feedback/date=2026-11-27/hour=09/w-00000001.parquet",
                       "feedback/date=2026-11-27/hour=10/w-00000002.parquet"]
    every = contracts.read_log(storage, contracts.FEEDBACK_DIR)
    assert contracts.record_keys(every).tolist() == ["a:0", "a:1", "b:0"]
    assert list(every.columns) == list(frame.columns)
    recent = contracts.read_files(storage, contracts.recent_files(storage, contracts.FEEDBACK_DIR))
    assert sorted(contracts.record_keys(recent)) == ["a:0", "a:1", "b:0"]
    since = contracts.read_partitioned(storage, contracts.FEEDBACK_DIR, since="2026-11-27T10:00:00Z")
    assert contracts.record_keys(since).tolist() == ["b:0"]
    empty = contracts.read_log(storage.child("none"))
    assert list(empty.columns) == list(contracts.META_COLUMNS)


def test_old_and_new_log_files_read_together_and_stray_objects_are_ignored(log_storage):
    storage = log_storage
    writer = contracts.PartitionedWriter(storage, contracts.PREDICTIONS_DIR, "w")
    base = {"request_id": ["a"], "row": [0], "prediction": [1], "time": pd.to_datetime(["2026-11-27T09:10:00Z"])}
    writer.write(pd.DataFrame(base))  # written before shadows existed
    writer.write(pd.DataFrame({**base, "request_id": ["b"], "shadow_version": ["v2"], "shadow_prediction": [0.0]}))
    storage.write_bytes("predictions/date=2026-11-27/hour=09/notes.txt", b"not a log file")
    storage.write_bytes("predictions/README.parquet", b"outside the partitions")
    frame = contracts.read_partitioned(storage, contracts.PREDICTIONS_DIR).sort_values("request_id")
    assert frame["request_id"].tolist() == ["a", "b"]
    assert pd.isna(frame["shadow_version"].iloc[0]) and frame["shadow_version"].iloc[1] == "v2"
    assert pd.isna(frame["shadow_prediction"].iloc[0]) and frame["shadow_prediction"].iloc[1] == 0.0
