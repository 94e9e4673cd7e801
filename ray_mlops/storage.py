"""Storage on any ``pyarrow.fs`` URI: a local folder, ``s3://…``, ``gs://…``.

Everything the loop keeps (feature tables, Tune results, the registry, the prediction
log, monitor checkpoints, events) lives under one :class:`Storage` root, so that every
node of a cluster sees the same state when the URI is shared object storage.

S3-compatible servers are reached with the URI query that pyarrow understands, e.g.
``s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http``, or with the
standard ``AWS_ENDPOINT_URL`` environment variable.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from ray_mlops.errors import StorageError

_TORN_READ_ATTEMPTS = 5


def _is_uri(location: str) -> bool:
    return "://" in location


def _s3_from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """S3 with the endpoint from ``AWS_ENDPOINT_URL`` when the URI does not set one."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if endpoint and "endpoint_override" not in uri:
        parts = urlsplit(endpoint)
        sep = "&" if urlsplit(uri).query else "?"
        uri = f"{uri}{sep}endpoint_override={parts.netloc}&scheme={parts.scheme or 'http'}"
    return pafs.FileSystem.from_uri(uri)


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """Turn a path or URI into ``(filesystem, path inside it)``; local paths become absolute."""
    try:
        if location.startswith("s3://"):
            return _s3_from_uri(location)
        if _is_uri(location):
            return pafs.FileSystem.from_uri(location)
        return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise StorageError(f"cannot open storage {location!r}: {exc}") from exc


class Storage:
    """A root folder on some filesystem, with the few operations the loop needs.

    Small JSON documents are written atomically (write-then-rename locally; a single PUT
    on object stores), so readers never see half a file.

    >>> import tempfile
    >>> store = Storage(tempfile.mkdtemp())
    >>> store.write_json("a/b.json", {"x": 1})
    >>> store.read_json("a/b.json")
    {'x': 1}
    >>> store.exists("a/missing.json")
    False
    """

    def __init__(self, location: str, *, _resolved: tuple[pafs.FileSystem, str] | None = None):
        self.location = location
        self.fs, self.root = _resolved or resolve(location)
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"Storage({self.location!r})"

    def __reduce__(self):
        return (Storage, (self.location,))

    # -- naming ---------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """The filesystem path of ``parts`` under the root (for ``filesystem=`` APIs)."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def uri(self, *parts: str) -> str:
        """A URI for ``parts`` under the root, usable by Ray Data / Tune without a filesystem."""
        if self.is_local:
            return self.path(*parts)
        scheme, netloc, path, query, fragment = urlsplit(self.location)
        joined = posixpath.join(path or "/", *parts)
        return urlunsplit((scheme, netloc, joined, query, fragment))

    def child(self, *parts: str) -> "Storage":
        """A :class:`Storage` rooted at ``parts`` below this one."""
        location = self.uri(*parts)
        return Storage(location, _resolved=(self.fs, self.path(*parts)))

    # -- reading ----------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        info = self._info(rel)
        return info.type != pafs.FileType.NotFound

    def is_dir(self, rel: str) -> bool:
        return self._info(rel).type == pafs.FileType.Directory

    def read_bytes(self, rel: str) -> bytes:
        """The whole file; on object stores, never a mix of two versions of it.

        pyarrow's S3 reader takes the size from a HEAD and then issues ranged GETs, so an
        object replaced in between comes back truncated or NUL-padded. Such a read is
        detected by the size changing under it, and retried.
        """
        for _ in range(_TORN_READ_ATTEMPTS):
            data = self._read_once(rel)
            if self.is_local or len(data) == self._info(rel).size:
                return data
        raise StorageError(f"{self.uri(rel)} kept changing while being read")

    def _read_once(self, rel: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(rel)) as stream:
                return stream.read()
        except FileNotFoundError as exc:
            raise StorageError(f"not found in storage: {self.uri(rel)}") from exc
        except (pa.ArrowException, OSError) as exc:
            raise StorageError(f"cannot read {self.uri(rel)}: {exc}") from exc

    def read_json(self, rel: str) -> Any:
        raw = self.read_bytes(rel)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise StorageError(f"{self.uri(rel)} is not valid JSON: {exc}") from exc

    def list(self, rel: str = "", *, recursive: bool = False) -> list[str]:
        """Names (relative to ``rel``) of the entries below ``rel``, sorted; [] if absent."""
        base = self.path(rel) if rel else self.root
        selector = pafs.FileSelector(base, allow_not_found=True, recursive=recursive)
        try:
            infos = self.fs.get_file_info(selector)
        except (pa.ArrowException, OSError) as exc:
            raise StorageError(f"cannot list {self.uri(rel)}: {exc}") from exc
        return sorted(posixpath.relpath(info.path, base) for info in infos)

    # -- writing ----------------------------------------------------------------------
    def makedirs(self, rel: str = "") -> None:
        try:
            self.fs.create_dir(self.path(rel) if rel else self.root, recursive=True)
        except (pa.ArrowException, OSError) as exc:
            raise StorageError(f"cannot create {self.uri(rel)}: {exc}") from exc

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` atomically (readers see the old or the new file)."""
        target = self.path(rel)
        try:
            if not self.is_local:  # an object store has no folders to make: one PUT
                with self.fs.open_output_stream(target) as out:
                    out.write(data)
                return
            self.fs.create_dir(posixpath.dirname(target), recursive=True)
            staging = f"{target}.tmp-{uuid.uuid4().hex}"
            with self.fs.open_output_stream(staging) as out:
                out.write(data)
            self.fs.move(staging, target)
        except (pa.ArrowException, OSError) as exc:
            raise StorageError(f"cannot write {self.uri(rel)}: {exc}") from exc

    def write_json(self, rel: str, document: Any) -> None:
        self.write_bytes(rel, json.dumps(document, indent=2, sort_keys=True, default=str).encode())

    def create(self, rel: str, data: bytes) -> bool:
        """Write ``rel`` only if it does not exist yet; False when another writer has it.

        The building block of compare-and-swap: of any number of concurrent creates of
        one name exactly one returns True, and readers see the whole file or none.
        Locally a staged file is hard-linked into place (``link`` fails on an existing
        name); on S3 a ``PutObject`` with ``If-None-Match: *``. Other filesystems have no
        conditional write through ``pyarrow.fs``: there it is check-then-write, which is
        not safe against concurrent writers.
        """
        try:
            if self.is_local:
                return self._create_local(self.path(rel), data)
            if isinstance(self.fs, pafs.S3FileSystem):
                return _S3Conditional(self.location).create(self.path(rel), data)
        except (pa.ArrowException, OSError) as exc:
            raise StorageError(f"cannot create {self.uri(rel)}: {exc}") from exc
        if self.exists(rel):
            return False
        self.write_bytes(rel, data)
        return True

    def _create_local(self, target: str, data: bytes) -> bool:
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        staging = f"{target}.tmp-{uuid.uuid4().hex}"
        with open(staging, "wb") as out:
            out.write(data)
        try:
            os.link(staging, target)
        except FileExistsError:
            return False
        finally:
            os.unlink(staging)
        return True

    def delete(self, rel: str) -> None:
        """Remove a file or a folder tree; absent is fine."""
        info = self._info(rel)
        try:
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(self.path(rel))
            elif info.type == pafs.FileType.File:
                self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            return  # removed by another writer between the look and the delete: absent is fine
        except (pa.ArrowException, OSError) as exc:
            raise StorageError(f"cannot delete {self.uri(rel)}: {exc}") from exc

    def _info(self, rel: str) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path(rel) if rel else self.root)
        except (pa.ArrowException, OSError) as exc:
            raise StorageError(f"cannot reach {self.uri(rel)}: {exc}") from exc


@functools.lru_cache(maxsize=8)
def _s3_client(options: tuple) -> Any:
    import boto3  # boto3 clients are thread-safe: one per endpoint and keys

    return boto3.client("s3", **dict(options))


class _S3Conditional:
    """Conditional S3 writes (``pyarrow.fs`` has none): boto3 with the URI's endpoint and keys."""

    def __init__(self, location: str):
        query = {k: v[-1] for k, v in parse_qs(urlsplit(location).query).items()}
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if "endpoint_override" in query:
            endpoint = f"{query.get('scheme', 'https')}://{query['endpoint_override']}"
        self.options = {"endpoint_url": endpoint, "region_name": query.get("region"),
                        "aws_access_key_id": query.get("access_key"), "aws_secret_access_key": query.get("secret_key")}

    def create(self, path: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = path.partition("/")
        try:
            _s3_client(tuple(sorted((k, v) for k, v in self.options.items() if v))).put_object(
                Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise OSError(str(exc)) from exc
        except BotoCoreError as exc:
            raise OSError(str(exc)) from exc
        return True


__all__ = ["Storage", "resolve"]
