"""Data fingerprints: a sha256 over every input file's name and content.

Files are hashed in parallel Ray tasks (a chunk of files each) and combined in a fixed
order, so the fingerprint changes exactly when an input file is added, removed, renamed
or changed, and is the same on any machine for the same files.
"""

from __future__ import annotations

import hashlib
import posixpath

import pyarrow.fs as pafs
import ray

from ray_mlops.config import Config
from ray_mlops.errors import DataError
from ray_mlops.storage import resolve

CHUNK_FILES = 512
READ_BYTES = 1 << 20


def list_source_files(location: str, source_name: str) -> tuple[pafs.FileSystem, str, list[str]]:
    """``(filesystem, folder, files)`` of a source: a file, or a folder searched recursively."""
    fs, path = resolve(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"source {source_name!r}: not found: {location}")
    if info.type == pafs.FileType.File:
        return fs, posixpath.dirname(path), [path]
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and not _hidden(i.path))
    if not files:
        raise DataError(f"source {source_name!r}: no files in {location}")
    return fs, path, files


def _hidden(path: str) -> bool:
    name = posixpath.basename(path)
    return name.startswith(".") or name.startswith("_")


@ray.remote(num_cpus=0.5)
def _hash_files(fs: pafs.FileSystem, paths: list[str], root: str) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(posixpath.relpath(path, root).encode() + b"\0")
        with fs.open_input_stream(path) as stream:
            while chunk := stream.read(READ_BYTES):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def fingerprint_sources(config: Config) -> str:
    """The sha256 of every configured source's files (names relative to the source)."""
    digest = hashlib.sha256()
    for source in config.data.sources:
        location = config.resolve_source_path(source)
        fs, root, files = list_source_files(location, source.name)
        chunks = [files[i : i + CHUNK_FILES] for i in range(0, len(files), CHUNK_FILES)]
        parts = ray.get([_hash_files.remote(fs, chunk, root) for chunk in chunks])
        digest.update(source.name.encode() + b"\0" + "".join(parts).encode())
    return digest.hexdigest()


__all__ = ["fingerprint_sources", "list_source_files"]
