"""Data fingerprints: a sha256 over the data config and every input file's name and content.

A source's files are listed once per ingest (:func:`list_source_files`) and the listing
is shared by the fingerprint, the bucket count and the reads. Files are hashed in
parallel Ray tasks, a group of chunks per task, and the chunk digests are combined in a
fixed order, so the fingerprint changes exactly when an input file is added, removed,
renamed or changed, or the data config that shapes the table changes, and is the same on
any machine for the same files and settings.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass

import pyarrow.fs as pafs
import ray

from ray_mlops.config import Config
from ray_mlops.errors import DataError
from ray_mlops.storage import resolve

CHUNK_FILES = 512
CHUNKS_PER_TASK = 8
READ_BYTES = 1 << 20


@dataclass(frozen=True)
class SourceFiles:
    """A source's files: their filesystem, the folder they are named relative to, sorted paths, total bytes."""

    fs: pafs.FileSystem
    root: str
    paths: list[str]
    size: int


def list_source_files(location: str, source_name: str) -> SourceFiles:
    """The files of a source: a file, or a folder searched recursively (hidden files skipped)."""
    fs, path = resolve(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"source {source_name!r}: not found: {location}")
    if info.type == pafs.FileType.File:
        return SourceFiles(fs, posixpath.dirname(path), [path], info.size or 0)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted((i for i in infos if i.type == pafs.FileType.File and not _hidden(i.path)), key=lambda i: i.path)
    if not files:
        raise DataError(f"source {source_name!r}: no files in {location}")
    return SourceFiles(fs, path, [i.path for i in files], sum(i.size or 0 for i in files))


def list_sources(config: Config) -> dict[str, SourceFiles]:
    """Every configured source's files, by source name."""
    return {s.name: list_source_files(config.resolve_source_path(s), s.name) for s in config.data.sources}


def _hidden(path: str) -> bool:
    name = posixpath.basename(path)
    return name.startswith(".") or name.startswith("_")


def _hash_chunk(fs: pafs.FileSystem, paths: list[str], root: str) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(posixpath.relpath(path, root).encode() + b"\0")
        with fs.open_input_stream(path) as stream:
            while chunk := stream.read(READ_BYTES):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


@ray.remote
def _hash_chunks(fs: pafs.FileSystem, chunks: list[list[str]], root: str) -> list[str]:
    """The digest of each chunk of files (several chunks per task keep the task count low)."""
    return [_hash_chunk(fs, paths, root) for paths in chunks]


def _source_digest(files: SourceFiles) -> str:
    """The concatenated chunk digests of one source's files, in file order."""
    chunks = [files.paths[i : i + CHUNK_FILES] for i in range(0, len(files.paths), CHUNK_FILES)]
    groups = [chunks[i : i + CHUNKS_PER_TASK] for i in range(0, len(chunks), CHUNKS_PER_TASK)]
    parts = ray.get([_hash_chunks.remote(files.fs, group, files.root) for group in groups])
    return "".join(digest for part in parts for digest in part)


def data_config_digest(config: Config) -> str:
    """The sha256 of the data config that shapes the table (column checks, featurizers, ...).

    ``data.root`` and ``data.stall_timeout_s`` are left out: the same files and settings give
    the same table anywhere, however long the ingest may wait.
    """
    shaping = config.data.model_dump(mode="json", exclude={"root", "stall_timeout_s"})
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint_sources(config: Config, listed: dict[str, SourceFiles] | None = None) -> str:
    """The sha256 of the data config and every configured source's files (names relative to the source).

    ``listed`` reuses listings from :func:`list_sources` instead of listing again.
    """
    listed = listed or list_sources(config)
    digest = hashlib.sha256(data_config_digest(config).encode())
    for source in config.data.sources:
        digest.update(source.name.encode() + b"\0" + _source_digest(listed[source.name]).encode())
    return digest.hexdigest()


__all__ = ["SourceFiles", "data_config_digest", "fingerprint_sources", "list_source_files", "list_sources"]
