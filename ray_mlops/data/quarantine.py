"""Quarantine: rejected records, each with its source and reason, written next to the table.

Rejects are written from inside Ray Data tasks. The file name is the hash of the rejected
rows (in any order: a retried task after a shuffle may see its rows reordered), so a
retried task rewrites the same file instead of duplicating records, and the counts read
back afterwards are exact.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ray_mlops.storage import Storage

REJECT_COLUMNS = ["source", "reason", "record"]


def reject_frame(source: str, reasons: list[str], records: list[Any]) -> pd.DataFrame:
    """A uniform frame of rejects; ``records`` are JSON-encoded so every source shares a schema."""
    encoded = [r if isinstance(r, str) else json.dumps(r, default=str, sort_keys=True) for r in records]
    return pd.DataFrame({"source": source, "reason": reasons, "record": encoded}, columns=REJECT_COLUMNS)


class Quarantine:
    """Writes reject frames under ``<folder>/<source>/`` of a :class:`Storage`."""

    def __init__(self, storage: Storage, folder: str):
        self.storage = storage
        self.folder = folder

    def write(self, rejects: pd.DataFrame) -> None:
        if rejects.empty:
            return
        table = pa.Table.from_pandas(rejects[REJECT_COLUMNS].astype(str), preserve_index=False)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        data = sink.getvalue()
        lines = sorted(rejects[REJECT_COLUMNS].to_csv(index=False, header=False).splitlines())
        name = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]
        self.storage.write_bytes(f"{self.folder}/{rejects['source'].iloc[0]}/{name}.parquet", data)

    def read(self) -> pd.DataFrame:
        """Every rejected record so far (source, reason, record)."""
        files = [f for f in self.storage.list(self.folder, recursive=True) if f.endswith(".parquet")]
        if not files:
            return pd.DataFrame(columns=REJECT_COLUMNS)
        frames = [
            pq.read_table(self.storage.path(f"{self.folder}/{f}"), filesystem=self.storage.fs).to_pandas()
            for f in files
        ]
        return pd.concat(frames, ignore_index=True)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{source: {reason: count}}`` of everything quarantined."""
        rejects = self.read()
        result: dict[str, dict[str, int]] = {}
        for (source, reason), size in rejects.groupby(["source", "reason"]).size().items():
            result.setdefault(source, {})[reason] = int(size)
        return result


__all__ = ["Quarantine", "reject_frame", "REJECT_COLUMNS"]
