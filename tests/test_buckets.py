"""The ingest's one shuffle: records packed by entity bucket, and the join step on a shuffled block.

Packing and the join step run without Ray on real sources (a CSV table source and the
``kv`` toy source type); the last test shuffles packed rows with Ray Data's own hash
repartition, as the ingest does, and checks that every bucket lands whole in one block.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ray_mlops.config import config_from_dict
from ray_mlops.data.buckets import BUCKET, PAYLOAD, SOURCE, Buckets, JoinStep, unpack
from ray_mlops.data.quarantine import Quarantine
from ray_mlops.data.sources import register_source, sources_of
from ray_mlops.storage import Storage
from test_source_plugins import KeyValueSource


def _records(keys: list[str], values: list[float | None]) -> pa.Table:
    return pa.table({"id": keys, "x": pa.array(values, pa.float64())})


def test_every_record_lands_in_one_bucket_and_an_entity_always_in_the_same():
    buckets = Buckets(8, key="id")
    keys = [f"e{i % 50}" for i in range(400)]
    first, second = buckets.pack("s", _records(keys[:200], list(range(200)))), buckets.pack("s", _records(keys[200:], list(range(200, 400))))
    where: dict[str, set[int]] = {}
    rows = 0
    for packed in (first, second):
        assert packed.column_names == [BUCKET, SOURCE, PAYLOAD] and set(packed.column(SOURCE).to_pylist()) == {"s"}
        for label, payload in zip(packed.column(BUCKET).to_pylist(), packed.column(PAYLOAD).to_pylist()):
            frame = unpack([payload])
            rows += len(frame)
            for key in frame["id"]:
                where.setdefault(key, set()).add(label)
    assert rows == 400 and len(where) == 50
    assert all(len(labels) == 1 for labels in where.values())


def test_an_entitys_bucket_is_the_same_in_another_process():
    """Pack tasks run in many worker processes: the bucket must not depend on the process (Python's hash() would)."""
    keys = [f"e{i}" for i in range(100)]
    script = ("import pandas as pd; from ray_mlops.data.buckets import Buckets; "
              f"print(Buckets(8, key='id').of(pd.Series({keys!r})).tolist())")
    elsewhere = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                               env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert json.loads(elsewhere) == Buckets(8, key="id").of(pd.Series(keys)).tolist()


def test_unpack_unifies_batches_whose_columns_arrow_typed_differently():
    buckets = Buckets(1, key="id")
    typed = buckets.pack("s", _records(["a"], [1.0])).column(PAYLOAD).to_pylist()
    untyped = buckets.pack("s", pa.table({"id": ["b"], "x": pa.nulls(1)})).column(PAYLOAD).to_pylist()
    frame = unpack(typed + untyped)
    assert frame["id"].tolist() == ["a", "b"] and frame["x"].iloc[0] == 1.0 and pd.isna(frame["x"].iloc[1])


def test_an_empty_batch_packs_to_no_rows():
    assert Buckets(2, key="id").pack("s", _records([], [])).num_rows == 0


@pytest.fixture
def two_sources(tmp_path):
    register_source(KeyValueSource)
    root = tmp_path / "data"
    root.mkdir()
    config = config_from_dict({"storage": str(tmp_path / "store"), "data": {
        "root": str(root), "entity_key": "id", "label": "y",
        "sources": [{"name": "labels", "format": "csv", "path": "labels.csv", "columns": {"y": {"type": "int"}}},
                    {"name": "pairs", "format": "kv", "path": "kv"}]}})
    return sources_of(config), Storage(str(tmp_path / "store"))


def test_the_join_step_builds_each_sources_entities_and_joins_them_full_outer(two_sources):
    (labels, pairs), storage = two_sources
    buckets = Buckets(1, key="id")
    label_records, _ = labels.records(pd.DataFrame({"id": ["a", "b", "c"], "y": ["1", "0", "1"]}))
    pair_records = pd.DataFrame({"id": ["b", "c", "c", "d"], "pairs__pairs": [1.0, 2.0, 2.0, 3.0],
                                 "pairs__total": [5.0, 6.0, 6.0, 7.0]})
    packed = pa.concat_tables([buckets.pack("labels", pa.Table.from_pandas(label_records, preserve_index=False)),
                               buckets.pack("pairs", pa.Table.from_pandas(pair_records, preserve_index=False))])
    joined = JoinStep([labels, pairs], Quarantine(storage, "quarantine"), storage.child("counts"))(packed)
    joined = joined.sort_values("id").reset_index(drop=True)
    assert joined["id"].tolist() == ["a", "b", "c", "d"]  # full outer: d has no label, a no pairs
    assert joined["y"].isna().tolist() == [False, False, False, True]
    assert np.isnan(joined.loc[0, "pairs__total"]) and joined.loc[2, "pairs__total"] == 6.0
    counts = storage.child("counts")
    assert {s: sum(counts.read_json(f"{s}/{f}") for f in counts.list(s)) for s in ("labels", "pairs")} == {"labels": 3, "pairs": 3}


@pytest.mark.parametrize("partitions", [2, 7])
def test_buckets_land_whole_in_one_block_of_ray_datas_hash_shuffle(ray_session, partitions):
    import ray.data

    buckets = Buckets(partitions * 16, key="id")
    keys = [f"e{i}" for i in range(2000)]
    packed = [buckets.pack(f"s{j}", _records(keys[j::3], [1.0] * len(keys[j::3]))) for j in range(3)]
    shuffled = ray.data.from_arrow(packed).repartition(partitions, keys=[BUCKET])
    blocks = [b for b in shuffled.iter_batches(batch_size=None, batch_format="pyarrow") if b.num_rows]
    where: dict[int, set[int]] = {}
    for index, block in enumerate(blocks):
        for label in block.column(BUCKET).to_pylist():
            where.setdefault(label, set()).add(index)
    assert len(blocks) <= partitions and all(len(places) == 1 for places in where.values())
    entities = [unpack(b.column(PAYLOAD).to_pylist())["id"] for b in blocks]
    assert sorted(k for e in entities for k in e) == sorted(keys)  # every record, once
