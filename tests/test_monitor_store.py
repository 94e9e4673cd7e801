"""Reading the serving logs: a retraining reads only the partitions since drift began."""

from __future__ import annotations

import pandas as pd

from ray_mlops.contracts import parquet_bytes, read_partitioned
from ray_mlops.storage import Storage


def _write(storage: Storage, partition: str, rows: list[int]) -> None:
    frame = pd.DataFrame({"request_id": [f"r{i}" for i in rows], "row": 0, "label": 1})
    storage.write_bytes(f"feedback/{partition}/w-{rows[0]}.parquet", parquet_bytes(frame))


def test_since_prunes_partitions_by_utc_hour(tmp_path):
    storage = Storage(str(tmp_path))
    _write(storage, "date=2026-11-26/hour=23", [1, 2])
    _write(storage, "date=2026-11-27/hour=09", [3])
    _write(storage, "date=2026-11-27/hour=10", [4, 5])
    _write(storage, "date=2026-11-28/hour=00", [6])
    every = read_partitioned(storage, "feedback")
    assert sorted(every["request_id"]) == [f"r{i}" for i in range(1, 7)]
    assert list(every.columns) == ["request_id", "row", "label"]  # partition columns dropped
    recent = read_partitioned(storage, "feedback", since="2026-11-27T10:30:00+00:00")
    assert sorted(recent["request_id"]) == ["r4", "r5", "r6"]
    same_instant = read_partitioned(storage, "feedback", since="2026-11-27T11:30:00+01:00")
    assert sorted(same_instant["request_id"]) == ["r4", "r5", "r6"]
    assert read_partitioned(storage, "feedback", since="2026-11-29T00:00:00Z").empty
    assert read_partitioned(storage, "predictions").empty  # no log yet
