"""Ray Data reads shared by the source types: files in chunks, Parquet files, CSV headers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_mlops.errors import DataError

if TYPE_CHECKING:
    import ray.data  # imported where a Dataset is built: reading a config needs no Ray Data

#: Files read per task by ``read_files`` (``read_binary_files`` pays ~1 ms per file).
FILES_PER_TASK = 1024
#: Input bytes a read task of :func:`files_per_task` aims at: few blocks to stage, each a few MB.
TASK_BYTES = 8 << 20


def check_columns(found: list[str], needed: list[str], source: str, location: str) -> None:
    """A :class:`DataError` naming the first of ``needed`` that a file lacks."""
    missing = [c for c in needed if c not in found]
    if missing:
        raise DataError(f"source {source!r}: {location} has no column {missing[0]!r} (columns: {found})")


def csv_header(fs: Any, path: str) -> list[str]:
    """The column names on a CSV file's first line."""
    with fs.open_input_stream(path) as stream:
        first = stream.read(1 << 16).split(b"\n", 1)[0].decode("utf-8", errors="replace")
    return [c.strip().strip('"') for c in first.strip().split(",")]


def parquet_columns(fs: Any, path: str) -> list[str]:
    return pq.read_schema(path, filesystem=fs).names


class _ReadFiles:
    """Read a chunk of files' bytes in one task."""

    def __init__(self, fs: Any):
        self.fs = fs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        paths = [path for chunk in batch["paths"] for path in json.loads(chunk)]
        return {"path": paths, "bytes": [self._read(path) for path in paths]}

    def _read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as stream:
            return stream.read()


def files_per_task(listed: Any, cap: int = FILES_PER_TASK) -> int:
    """Files per read task for ``listed`` (a ``SourceFiles``): about ``TASK_BYTES`` of input each,
    but at least four tasks per CPU while there are files for them.

    Ingest stages every read task's records in one file per key bucket, so the task count
    (with the bucket count) sets how many files are staged: a task per 1 MB file would make
    that grow with the square of the data.
    """
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    average = max(1, listed.size // max(1, len(listed.paths)))
    return max(1, min(cap, TASK_BYTES // average, len(listed.paths) // (4 * cpus)))


def _file_chunks(files: list[str], per_task: int) -> ray.data.Dataset:
    import ray.data

    chunks = [json.dumps(files[i : i + per_task]) for i in range(0, len(files), per_task)]
    return ray.data.from_items([{"paths": chunk} for chunk in chunks], override_num_blocks=len(chunks))


def read_files(fs: Any, files: list[str], per_task: int = FILES_PER_TASK) -> ray.data.Dataset:
    """A Dataset of ``path`` + ``bytes`` rows, read in parallel tasks of ``per_task`` files."""
    return _file_chunks(files, per_task).map_batches(_ReadFiles(fs), batch_size=1, batch_format="numpy")


class _ReadParquet:
    """Read one Parquet file's ``columns`` in a task."""

    def __init__(self, fs: Any, columns: list[str]):
        self.fs, self.columns = fs, columns

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        paths = [path for chunk in batch["paths"] for path in json.loads(chunk)]
        return pa.concat_tables(pq.read_table(p, columns=self.columns, filesystem=self.fs) for p in paths)


def read_parquet_files(fs: Any, files: list[str], columns: list[str], per_task: int = 1) -> ray.data.Dataset:
    """A Dataset of the Parquet files' ``columns``, ``per_task`` files per task."""
    return _file_chunks(files, per_task).map_batches(_ReadParquet(fs, columns), batch_size=1, batch_format="numpy")


__all__ = ["FILES_PER_TASK", "check_columns", "csv_header", "files_per_task", "parquet_columns", "read_files", "read_parquet_files"]
