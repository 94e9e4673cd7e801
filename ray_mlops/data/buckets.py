"""One shuffle for every source: records packed by entity bucket, then per bucket each source's entity step and their join.

    source A: record step ─► pack ─┐
    source B: record step ─► pack ─┼─► union ─► hash shuffle by bucket ─► join step
    source C: record step ─► pack ─┘

A bucket is a stable hash of the entity key, so every record of an entity, from every
source, lands in the same block of the shuffle's output. Packed rows have one schema
whatever a source's columns (``bucket``, ``source``, ``payload``: a bucket's records as
an Arrow IPC stream), so all sources go through a single
shuffle. The join step then runs each source's entity step on its records in the block and
joins the entity rows on the key (full outer).

>>> buckets = Buckets(count=8, key="machine_id")
>>> records = pa.table({"machine_id": ["m1", "m2", "m1"], "reading": [1.0, 2.0, 3.0]})
>>> packed = buckets.pack("telemetry", records)
>>> packed.column_names
['bucket', 'source', 'payload']
>>> sorted(len(unpack([payload])) for payload in packed.column("payload").to_pylist())  # m1's two records in one bucket
[1, 2]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    from ray_mlops.data.quarantine import Quarantine
    from ray_mlops.data.sources import SourceType
    from ray_mlops.storage import Storage

BUCKET, SOURCE, PAYLOAD = "bucket", "source", "payload"
PACKED_SCHEMA = pa.schema([(BUCKET, pa.int32()), (SOURCE, pa.string()), (PAYLOAD, pa.large_binary())])


@dataclass(frozen=True)
class Buckets:
    """``count`` buckets of entities by a stable hash of ``key`` (the same in every process and run).

    The shuffle hashes the bucket numbers again to pick a partition, so a bucket always
    lands whole in one partition; several buckets per partition spread the entities over them.
    """

    count: int
    key: str

    def of(self, keys: pd.Series) -> np.ndarray:
        """The bucket of each key."""
        hashes = pd.util.hash_array(keys.to_numpy(dtype=object))
        return (hashes % np.uint64(self.count)).astype(np.int32)

    def pack(self, source: str, records: pa.Table) -> pa.Table:
        """A source's records → one packed row per bucket they fall in (its records as an Arrow IPC stream)."""
        if records.num_rows == 0:
            return PACKED_SCHEMA.empty_table()
        bucket = self.of(records.column(self.key).to_pandas())
        order = np.argsort(bucket, kind="stable")
        sizes = np.bincount(bucket, minlength=self.count)
        present = np.flatnonzero(sizes)
        starts = np.concatenate([[0], np.cumsum(sizes)])[present]
        ordered = records.take(order)
        payloads = [_ipc(ordered.slice(s, sizes[b])) for s, b in zip(starts, present)]
        return pa.table([pa.array(present, pa.int32()), pa.array([source] * len(present), pa.string()),
                         pa.array(payloads, pa.large_binary())], schema=PACKED_SCHEMA)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def unpack(payloads: list[bytes]) -> pd.DataFrame:
    """The records packed rows carry, as one frame (the payloads' schemas unified by column name)."""
    tables = [pa.ipc.open_stream(p).read_all() for p in payloads]
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


class Pack:
    """A picklable map_batches callable: one source's records → packed rows (:meth:`Buckets.pack`)."""

    def __init__(self, source: str, buckets: Buckets):
        self.source, self.buckets = source, buckets

    def __call__(self, records: pa.Table) -> pa.Table:
        return self.buckets.pack(self.source, records)


def entity_rows(source: "SourceType", records: pd.DataFrame, quarantine: "Quarantine", counts: "Storage") -> pd.DataFrame:
    """A source's entity step on all records of some entities: its rows; rejects to ``quarantine``, counted.

    The number of records the rows hold goes to ``counts/<source>/<digest of the keys>.json``:
    a retried task rewrites the same file, so the sum read back is exact.
    """
    rows, rejects = source.entities(records)
    quarantine.write(rejects)
    keys = np.sort(records[source.key].to_numpy(dtype=str))
    digest = hashlib.sha256("\0".join(keys).encode()).hexdigest()[:32]
    counts.write_json(f"{source.name}/{digest}.json", source.accepted(rows))
    return rows


class JoinStep:
    """Packed rows of some buckets (one block of the shuffle) → their entities, every source joined on the key.

    Each source's entity step (:func:`entity_rows`) runs on all its records in the block;
    the rows are joined full outer on the key.
    """

    def __init__(self, sources: list["SourceType"], quarantine: "Quarantine", counts: "Storage"):
        self.sources, self.quarantine, self.counts = sources, quarantine, counts

    def __call__(self, packed: pa.Table) -> pd.DataFrame:
        names = np.asarray(packed.column(SOURCE).to_pylist(), dtype=object)
        payloads = packed.column(PAYLOAD).to_pylist()
        entities = []
        for source in self.sources:
            mine = [payloads[i] for i in np.flatnonzero(names == source.name)]
            if mine:
                rows = entity_rows(source, unpack(mine), self.quarantine, self.counts)
                entities.append(rows.set_index(source.key))
        if not entities:
            return pd.DataFrame()
        return pd.concat(entities, axis=1, join="outer").rename_axis(self.sources[0].key).reset_index()


__all__ = ["Buckets", "JoinStep", "Pack", "entity_rows", "unpack"]
