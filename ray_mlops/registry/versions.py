"""The immutable version folders of one model: claim a number, write it (metadata last), read it verified.

``metadata.json`` is the completeness marker: a version folder without it (a register in
progress, or one that crashed) is invisible to every reader. Version numbers are claimed
with a small claim file before anything is written, so two concurrent registers (on one
machine or on shared object storage) never write into the same version.
"""

from __future__ import annotations

import random
import time
import uuid

from ray_mlops.errors import IntegrityError, RegistryError, StorageError, VersionExistsError, VersionNotFoundError
from ray_mlops.registry.artifacts import (
    Artifact,
    check_name,
    git_commit,
    is_version,
    now,
    package_versions,
    sha256,
    version_number,
)
from ray_mlops.storage import Storage

ARTIFACT = "model.skops"
METADATA = "metadata.json"
PROFILE_DIR = "profile"
CLAIMS_DIR = ".claims"
_CLAIM_ATTEMPTS = 50


class VersionStore:
    """The ``registry/<model>/v<N>/`` folders under ``root`` of ``storage``."""

    def __init__(self, storage: Storage, root: str, model_name: str):
        self.storage, self.root, self.model_name = storage, root, model_name

    def rel(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    # -- writing ------------------------------------------------------------------------
    def add(self, pinned: str | None, artifact: Artifact, profile_files: dict[str, bytes], lineage: dict) -> dict:
        """Write a new version (``pinned``, or the next free number); returns its metadata.

        The version becomes visible only once every file is written; on any failure
        nothing of it remains.
        """
        version = self._claim(pinned)
        try:
            metadata = self._write(version, artifact, profile_files, lineage)
        except BaseException:
            self._discard(version)
            raise
        self._release(version)
        return metadata

    def _write(self, version: str, artifact: Artifact, profile_files: dict[str, bytes], lineage: dict) -> dict:
        self.storage.write_bytes(self.rel(version, ARTIFACT), artifact.data)
        for name, data in profile_files.items():
            self.storage.write_bytes(self.rel(version, PROFILE_DIR, name), data)
        metadata = {
            "model_name": self.model_name,
            "version": version,
            "created": now(),
            **lineage,
            "artifact": {"file": ARTIFACT, "format": "skops", "sha256": sha256(artifact.data),
                         "bytes": len(artifact.data), "trusted_types": artifact.trusted,
                         "declared_types": artifact.declared},
            "profile_files": {name: sha256(data) for name, data in sorted(profile_files.items())},
            "packages": package_versions(),
            "git_commit": git_commit(),
        }
        self.storage.write_json(self.rel(version, METADATA), metadata)
        return metadata

    def _claim(self, pinned: str | None) -> str:
        """Reserve a version folder: write a claim, then win only if it is the sole claim.

        On storage with read-after-write consistency (local filesystems, S3) at most one
        writer wins a number; writers that see a rival withdraw and retry.
        """
        if pinned is not None and not is_version(pinned):
            raise RegistryError(f"invalid version name {pinned!r}: expected v<N> (v1, v2, …)")
        for _ in range(_CLAIM_ATTEMPTS):
            version = pinned or f"v{self._highest_number() + 1}"
            if self.storage.exists(self.rel(version, METADATA)):
                raise VersionExistsError(f"{self.model_name} {version} already exists; versions are immutable")
            claim = uuid.uuid4().hex
            self.storage.write_bytes(self.rel(version, CLAIMS_DIR, claim), now().encode())
            if self.storage.list(self.rel(version, CLAIMS_DIR)) == [claim]:
                return version
            self.storage.delete(self.rel(version, CLAIMS_DIR, claim))
            if pinned is not None:
                raise VersionExistsError(f"{self.model_name} {version} is being registered by another writer")
            time.sleep(random.uniform(0.01, 0.1))
        raise RegistryError(f"could not claim a new version of {self.model_name} after {_CLAIM_ATTEMPTS} attempts")

    def _release(self, version: str) -> None:
        try:
            self.storage.delete(self.rel(version, CLAIMS_DIR))
        except StorageError:
            pass  # the version is complete; a leftover claim only burns nothing

    def _discard(self, version: str) -> None:
        try:
            self.storage.delete(self.rel(version))
        except StorageError:
            pass  # still invisible: metadata.json was never written

    def _highest_number(self) -> int:
        """The highest version number with a folder (complete, claimed or abandoned)."""
        numbers = [version_number(n) for n in self.storage.list(self.root) if is_version(n)]
        return max(numbers, default=0)

    # -- reading ------------------------------------------------------------------------
    def all(self) -> list[dict]:
        """The metadata of every complete version, oldest first."""
        names = sorted((n for n in self.storage.list(self.root) if is_version(n)), key=version_number)
        return [self.storage.read_json(self.rel(n, METADATA)) for n in names if self.exists(n)]

    def exists(self, version: str) -> bool:
        return is_version(version) and self.storage.exists(self.rel(version, METADATA))

    def metadata(self, version: str) -> dict:
        return self.storage.read_json(self.rel(version, METADATA))

    def artifact(self, meta: dict) -> bytes:
        """The artifact bytes of the version ``meta`` describes, verified against its sha256."""
        name = meta["artifact"]["file"]
        return self._verified(self.rel(meta["version"], name), meta["artifact"]["sha256"], f"{meta['version']}/{name}")

    def profile_file(self, meta: dict, name: str) -> bytes:
        """A reference profile file of the version ``meta`` describes, verified against its sha256."""
        expected = meta.get("profile_files", {}).get(check_name(name, "profile file name"))
        if expected is None:
            raise VersionNotFoundError(f"{self.model_name} {meta['version']} has no profile file {name!r}")
        what = f"{meta['version']}/{PROFILE_DIR}/{name}"
        return self._verified(self.rel(meta["version"], PROFILE_DIR, name), expected, what)

    def _verified(self, rel: str, expected: str, what: str) -> bytes:
        data = self.storage.read_bytes(rel)
        actual = sha256(data)
        if actual != expected:
            raise IntegrityError(
                f"{self.model_name} {what}: sha256 {actual[:12]}… does not match the recorded "
                f"{expected[:12]}…; refusing to load it")
        return data
