"""The model registry: immutable versions with lineage, integrity, aliases and an event log.

Layout under a :class:`~ray_mlops.storage.Storage` root (any ``pyarrow.fs`` URI)::

    registry/<model>/v<N>/model.skops         the scikit-learn Pipeline (skops format)
    registry/<model>/v<N>/profile/<file>      reference profile files handed in by the caller
    registry/<model>/v<N>/metadata.json       lineage + sha256 of every file; written LAST
    registry/<model>/aliases/<alias>/<generation>.json   one file per change of the alias
    registry/<model>/events/<ns>-<id>.json    append-only event log, one object per event

An alias is the newest of its generation files (``0000000001.json``, …), each written
with a create-if-absent write (a hard link locally, ``If-None-Match: *`` on S3): a change
reads generation N and creates N + 1, and when another writer created it first it reads
again and retries. So concurrent promotions and rollbacks never lose one another, and the
generation files are the alias's complete, append-only history (:meth:`Registry.alias_log`).

``metadata.json`` is the completeness marker: a version folder without it (a register in
progress, or one that crashed) is invisible to every reader. Version numbers are claimed
with a small claim file before anything is written, so two concurrent registers (on one
machine or on shared object storage) never write into the same version.

Artifacts are skops files loaded with an explicit trusted-type list: the types skops
reports as untrusted must all be scikit-learn classes or numpy dtypes/scalars, or be
*declared* by the caller at registration (``register(..., trusted_types=[...])``, from a
family's ``train.families.<name>.trusted_types`` and its ``estimator`` class); otherwise
the artifact is refused. Declared types are recorded in the version's metadata
(``artifact.declared_types``) and are the only extra types trusted when it is loaded.
The artifact's sha256 is checked before it is deserialized.

>>> import tempfile
>>> from sklearn.dummy import DummyClassifier
>>> from sklearn.pipeline import make_pipeline
>>> reg = Registry(Storage(tempfile.mkdtemp()), "demo")
>>> model = make_pipeline(DummyClassifier()).fit([[0], [1]], [0, 1])
>>> reg.register(model, params={}, metrics={"roc_auc": 0.5}, data_fingerprint="f", config_hash="c")
'v1'
>>> reg.promote("v1", reason="first")
'v1'
>>> reg.resolve("production"), type(reg.load("production")).__name__
('v1', 'Pipeline')
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import json
import platform
import random
import re
import subprocess
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ray_mlops import telemetry
from ray_mlops.errors import (
    AliasMovedError,
    IntegrityError,
    RegistryError,
    StorageError,
    VersionExistsError,
    VersionNotFoundError,
)
from ray_mlops.storage import Storage

ALIASES = ("production", "candidate")
ARTIFACT = "model.skops"
METADATA = "metadata.json"
PROFILE_DIR = "profile"
CLAIMS_DIR = ".claims"

_VERSION_RE = re.compile(r"^v[1-9][0-9]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TYPE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_PACKAGES = {"sklearn": "scikit-learn", "numpy": "numpy", "pandas": "pandas", "pyarrow": "pyarrow",
             "ray": "ray", "skops": "skops", "ray_mlops": "ray-mlops"}
_CLAIM_ATTEMPTS = 50
_CAS_ATTEMPTS = 200
_GENERATION_RE = re.compile(r"^[0-9]{10}\.json$")
EVENTS_METRIC = "ray_mlops_registry_events"  # a counter, tagged model and kind

# Types skops flags as "untrusted" that a scikit-learn Pipeline legitimately contains.
# Anything else must be a scikit-learn class (see _is_allowed_type); never a function.
_TRUSTED_EXACT = frozenset({
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
})


# -- names ---------------------------------------------------------------------------
def is_version(name: str) -> bool:
    """True for a well-formed version name (``v1``, ``v2``, …)."""
    return isinstance(name, str) and bool(_VERSION_RE.match(name))


def version_number(version: str) -> int:
    return int(version[1:])


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
        raise RegistryError(f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-'")
    return value


def _check_alias(name: str) -> str:
    if name not in ALIASES:
        raise RegistryError(f"unknown alias {name!r}: expected one of {', '.join(ALIASES)}")
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into JSON-native Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- lineage -------------------------------------------------------------------------
def package_versions() -> dict[str, str | None]:
    """Versions of the packages a model depends on (recorded with every version)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in _PACKAGES.items():
        try:
            found[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[key] = None
    return found


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the ray_mlops source tree, when it is a git checkout; else None."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else None


# -- serialization -------------------------------------------------------------------
def _is_allowed_type(name: str) -> bool:
    """A scikit-learn class, a numpy dtype/scalar type, or one of the audited exact names."""
    if name in _TRUSTED_EXACT:
        return True
    module_name, _, attr = name.rpartition(".")
    top = module_name.split(".")[0]
    if top not in ("sklearn", "numpy"):
        return False
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return False
    if not isinstance(obj, type):
        return False
    return top == "sklearn" or issubclass(obj, (np.generic, np.dtype))


def check_declared_types(declared: Any) -> list[str]:
    """Declared trusted types as a sorted list of dotted ``module.Name`` strings."""
    if isinstance(declared, str) or not all(isinstance(t, str) and _TYPE_RE.match(t) for t in declared):
        raise RegistryError(f"trusted_types must be a list of dotted type names (module.Class), got {declared!r}")
    return sorted(set(declared))


def trusted_types(artifact: bytes, declared: Any = ()) -> list[str]:
    """The untrusted types skops reports for ``artifact``, after checking each one.

    A type is allowed when it is a scikit-learn class, a numpy dtype/scalar, one of the
    audited exact names, or in ``declared``. Raises :class:`IntegrityError` naming any
    other type (and where to declare it): such an artifact is never deserialized.
    """
    import skops.io as sio

    declared = set(check_declared_types(declared))
    try:
        reported = sio.get_untrusted_types(data=artifact)
    except Exception as exc:  # skops raises assorted errors on corrupt input
        raise IntegrityError(f"artifact is not a readable skops file: {exc}") from exc
    refused = sorted(t for t in reported if t not in declared and not _is_allowed_type(t))
    if refused:
        raise IntegrityError(
            f"artifact contains types that are not allowed: {', '.join(refused)}; if you trust them, declare "
            f"them in the model family's config: train.families.<family>.trusted_types: [{', '.join(refused)}]")
    return sorted(reported)


def dumps_model(model: Any, declared: Any = ()) -> tuple[bytes, list[str]]:
    """Serialize ``model`` with skops; check it loads back with the audited (and declared) types."""
    import skops.io as sio

    try:
        artifact = sio.dumps(model)
    except Exception as exc:
        raise RegistryError(f"cannot serialize {type(model).__name__} with skops: {exc}") from exc
    trusted = trusted_types(artifact, declared)
    loads_model(artifact, trusted)
    return artifact, trusted


def loads_model(artifact: bytes, trusted: list[str]) -> Any:
    import skops.io as sio

    try:
        return sio.loads(artifact, trusted=trusted)
    except Exception as exc:
        raise IntegrityError(f"artifact cannot be deserialized: {exc}") from exc


# -- aliases -------------------------------------------------------------------------
@dataclass(frozen=True)
class AliasChange:
    """One change of an alias: generation ``generation`` points it at ``version``.

    ``stack`` is what :meth:`Registry.rollback` walks back through (ending with
    ``version``); ``action`` is ``set``, ``promote`` or ``rollback``.
    """

    alias: str
    generation: int
    version: str
    previous: str | None
    stack: tuple[str, ...]
    action: str
    reason: str
    updated: str

    def to_doc(self) -> dict:
        return {**asdict(self), "stack": list(self.stack)}

    @classmethod
    def from_doc(cls, doc: dict) -> "AliasChange":
        return cls(**{**doc, "stack": tuple(doc["stack"])})


# -- the registry --------------------------------------------------------------------
class Registry:
    """Versions, aliases and events of one model under a storage root.

    ``storage`` may be a :class:`Storage` or a path/URI. Nothing is read or written until
    the first call, so constructing a registry never fails on an unreachable store.
    """

    _clock_lock = threading.Lock()
    _last_ns = 0

    def __init__(self, storage: Storage | str, model_name: str):
        self.storage = storage if isinstance(storage, Storage) else Storage(storage)
        self.model_name = _check_name(model_name, "model name")
        self.root = f"registry/{self.model_name}"

    def __repr__(self) -> str:
        return f"Registry({self.storage.location!r}, {self.model_name!r})"

    # -- paths --------------------------------------------------------------------------
    def _rel(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    # -- registering --------------------------------------------------------------------
    def register(
        self,
        model: Any,
        *,
        params: dict,
        metrics: dict,
        data_fingerprint: str,
        config_hash: str,
        profile_files: dict[str, bytes] | None = None,
        parent: str | None = None,
        extra: dict | None = None,
        version: str | None = None,
        trusted_types: Any = (),
    ) -> str:
        """Store ``model`` as a new immutable version and return its name (``v1``, ``v2``, …).

        ``version`` pins the name (an existing one raises :class:`VersionExistsError`);
        by default the next free number is taken. The version becomes visible only once
        every file is written; on any failure nothing of it remains. ``trusted_types``
        are non-scikit-learn types the caller vouches for (a user estimator's classes);
        they are recorded as ``artifact.declared_types`` and trusted when loading it.
        A classifier's ``classes_`` are recorded as ``classes``.
        """
        params, metrics, extra = plain(dict(params)), plain(dict(metrics)), plain(dict(extra or {}))
        profile_files = dict(profile_files or {})
        for name in profile_files:
            _check_name(name, "profile file name")
        if parent is not None:
            parent = self.resolve(parent)
        declared = check_declared_types(trusted_types)
        artifact, trusted = dumps_model(model, declared)
        version, claim = self._claim(version)
        try:
            metadata = self._write_version(version, artifact, (trusted, declared), profile_files, {
                "params": params, "metrics": metrics, "data_fingerprint": data_fingerprint,
                "config_hash": config_hash, "parent": parent, "extra": extra,
                "estimator": type(model).__name__, "classes": plain(list(getattr(model, "classes_", []))),
            })
        except BaseException:
            self._discard(version)
            raise
        self._release(version)
        self.record_event("register", version=version, parent=parent, sha256=metadata["artifact"]["sha256"],
                          data_fingerprint=data_fingerprint, config_hash=config_hash, metrics=metrics)
        return version

    def _write_version(self, version: str, artifact: bytes, types: tuple[list[str], list[str]],
                       profile_files: dict[str, bytes], lineage: dict) -> dict:
        trusted, declared = types
        self.storage.write_bytes(self._rel(version, ARTIFACT), artifact)
        for name, data in profile_files.items():
            self.storage.write_bytes(self._rel(version, PROFILE_DIR, name), data)
        metadata = {
            "model_name": self.model_name,
            "version": version,
            "created": _now(),
            **lineage,
            "artifact": {"file": ARTIFACT, "format": "skops", "sha256": _sha256(artifact),
                         "bytes": len(artifact), "trusted_types": trusted, "declared_types": declared},
            "profile_files": {name: _sha256(data) for name, data in sorted(profile_files.items())},
            "packages": package_versions(),
            "git_commit": git_commit(),
        }
        self.storage.write_json(self._rel(version, METADATA), metadata)
        return metadata

    def _claim(self, pinned: str | None) -> tuple[str, str]:
        """Reserve a version folder: write a claim, then win only if it is the sole claim.

        On storage with read-after-write consistency (local filesystems, S3) at most one
        writer wins a number; writers that see a rival withdraw and retry.
        """
        if pinned is not None and not is_version(pinned):
            raise RegistryError(f"invalid version name {pinned!r}: expected v<N> (v1, v2, …)")
        for _ in range(_CLAIM_ATTEMPTS):
            version = pinned or f"v{self._highest_number() + 1}"
            if self.storage.exists(self._rel(version, METADATA)):
                raise VersionExistsError(f"{self.model_name} {version} already exists; versions are immutable")
            claim = uuid.uuid4().hex
            self.storage.write_bytes(self._rel(version, CLAIMS_DIR, claim), _now().encode())
            if self.storage.list(self._rel(version, CLAIMS_DIR)) == [claim]:
                return version, claim
            self.storage.delete(self._rel(version, CLAIMS_DIR, claim))
            if pinned is not None:
                raise VersionExistsError(f"{self.model_name} {version} is being registered by another writer")
            time.sleep(random.uniform(0.01, 0.1))
        raise RegistryError(f"could not claim a new version of {self.model_name} after {_CLAIM_ATTEMPTS} attempts")

    def _release(self, version: str) -> None:
        try:
            self.storage.delete(self._rel(version, CLAIMS_DIR))
        except StorageError:
            pass  # the version is complete; a leftover claim only burns nothing

    def _discard(self, version: str) -> None:
        try:
            self.storage.delete(self._rel(version))
        except StorageError:
            pass  # still invisible: metadata.json was never written

    def _highest_number(self) -> int:
        """The highest version number with a folder (complete, claimed or abandoned)."""
        numbers = [version_number(n) for n in self.storage.list(self.root) if is_version(n)]
        return max(numbers, default=0)

    # -- reading ------------------------------------------------------------------------
    def versions(self) -> list[dict]:
        """The metadata of every complete version, oldest first."""
        names = sorted((n for n in self.storage.list(self.root) if is_version(n)), key=version_number)
        found = []
        for name in names:
            if self.storage.exists(self._rel(name, METADATA)):
                found.append(self.storage.read_json(self._rel(name, METADATA)))
        return found

    def latest(self) -> str | None:
        """The newest complete version, or None for an empty registry."""
        complete = self.versions()
        return complete[-1]["version"] if complete else None

    def exists(self, version: str) -> bool:
        return is_version(version) and self.storage.exists(self._rel(version, METADATA))

    def resolve(self, ref: str) -> str:
        """The version a version name or alias refers to; :class:`VersionNotFoundError` if none."""
        if ref in ALIASES:
            version = self.get_alias(ref)
            if version is None:
                raise VersionNotFoundError(f"alias {ref!r} of model {self.model_name} is not set")
            return version
        if not is_version(ref):
            raise VersionNotFoundError(
                f"{ref!r} is neither a version (v1, v2, …) nor an alias ({', '.join(ALIASES)})")
        if not self.storage.exists(self._rel(ref, METADATA)):
            raise VersionNotFoundError(f"model {self.model_name} has no version {ref!r}")
        return ref

    def metadata(self, ref: str) -> dict:
        return self.storage.read_json(self._rel(self.resolve(ref), METADATA))

    def load(self, ref: str) -> Any:
        """The Pipeline of a version or alias; its sha256 is verified before deserializing."""
        meta = self.metadata(ref)
        artifact = self.storage.read_bytes(self._rel(meta["version"], meta["artifact"]["file"]))
        self._verify(artifact, meta["artifact"]["sha256"], f"{meta['version']}/{meta['artifact']['file']}")
        return loads_model(artifact, trusted_types(artifact, meta["artifact"].get("declared_types", [])))

    def read_profile_file(self, ref: str, name: str) -> bytes:
        """A reference profile file stored with a version, verified against its sha256."""
        meta = self.metadata(ref)
        expected = meta.get("profile_files", {}).get(_check_name(name, "profile file name"))
        if expected is None:
            raise VersionNotFoundError(f"{self.model_name} {meta['version']} has no profile file {name!r}")
        data = self.storage.read_bytes(self._rel(meta["version"], PROFILE_DIR, name))
        self._verify(data, expected, f"{meta['version']}/{PROFILE_DIR}/{name}")
        return data

    def _verify(self, data: bytes, expected: str, what: str) -> None:
        actual = _sha256(data)
        if actual != expected:
            raise IntegrityError(
                f"{self.model_name} {what}: sha256 {actual[:12]}… does not match the recorded "
                f"{expected[:12]}…; refusing to load it")

    # -- aliases ------------------------------------------------------------------------
    def _alias_rel(self, name: str, *parts: str) -> str:
        return self._rel("aliases", _check_alias(name), *parts)

    def _alias_log_names(self, name: str) -> list[str]:
        return [n for n in self.storage.list(self._alias_rel(name)) if _GENERATION_RE.match(n)]

    def _alias_state(self, name: str) -> AliasChange | None:
        """The alias's newest change (its current state), or None when it was never set."""
        names = self._alias_log_names(name)
        if names:
            return AliasChange.from_doc(self.storage.read_json(self._alias_rel(name, names[-1])))
        legacy = self._rel("aliases", f"{name}.json")  # a store written before compare-and-swap
        if self.storage.exists(legacy):
            doc = self.storage.read_json(legacy)
            return AliasChange(name, 0, doc["version"], None, tuple(doc["history"]), "set", doc.get("reason", ""), "")
        return None

    def _change_alias(self, name: str, decide: Any) -> AliasChange:
        """Compare-and-swap: ``decide(current) -> (action, version, stack, reason)``; retried on conflict.

        The change is written as generation ``current + 1`` with a create-if-absent write,
        so of two concurrent writers one wins and the other re-reads and decides again.
        """
        for attempt in range(_CAS_ATTEMPTS):
            current = self._alias_state(name)
            action, version, stack, reason = decide(current)
            change = AliasChange(name, (current.generation if current else 0) + 1, version,
                                 current.version if current else None, tuple(stack), action, reason, _now())
            rel = self._alias_rel(name, f"{change.generation:010d}.json")
            if self.storage.create(rel, json.dumps(change.to_doc(), sort_keys=True).encode()):
                return change
            time.sleep(random.uniform(0.002, 0.02) * min(attempt + 1, 10))
        raise RegistryError(f"alias {name!r} of {self.model_name}: still contended after {_CAS_ATTEMPTS} attempts")

    def get_alias(self, name: str) -> str | None:
        state = self._alias_state(name)
        return state.version if state else None

    def aliases(self) -> dict[str, str | None]:
        return {name: self.get_alias(name) for name in ALIASES}

    def alias_history(self, name: str) -> list[str]:
        """The versions a rollback walks back through, oldest first, ending with the current one."""
        state = self._alias_state(name)
        return list(state.stack) if state else []

    def alias_log(self, name: str) -> list[AliasChange]:
        """Every change of alias ``name``, oldest first: append-only and complete."""
        return [AliasChange.from_doc(self.storage.read_json(self._alias_rel(name, n)))
                for n in self._alias_log_names(name)]

    def _point(self, name: str, ref: str, reason: str, action: str) -> AliasChange:
        """Point alias ``name`` at the version ``ref`` resolves to (compare-and-swap)."""
        version = self.resolve(ref)

        def decide(current: AliasChange | None) -> tuple:
            stack = list(current.stack) if current else []
            if not stack or stack[-1] != version:
                stack.append(version)
            return action, version, stack, reason

        return self._change_alias(name, decide)

    def set_alias(self, name: str, version: str, *, reason: str = "") -> str:
        """Point ``name`` (``production`` or ``candidate``) at ``version``, atomically.

        ``version`` may itself be an alias (``set_alias("production", "candidate")``);
        returns the version the alias now points at.
        """
        change = self._point(_check_alias(name), version, reason, "set")
        self.record_event("alias", alias=name, version=change.version, previous=change.previous, reason=reason,
                          generation=change.generation)
        return change.version

    def promote(self, version: str, *, reason: str, scores: dict | None = None) -> str:
        """Make ``version`` (or the version an alias names) the production model.

        The previous production version is remembered, so :meth:`rollback` can return to it.
        """
        change = self._point("production", version, reason, "promote")
        self.record_event("promote", version=change.version, previous=change.previous, reason=reason,
                          scores=plain(dict(scores or {})), generation=change.generation)
        return change.version

    def rollback(self, reason: str = "manual", *, details: dict | None = None, expected: str | None = None) -> str:
        """Point ``production`` back at the version before it; returns that version.

        ``expected``: roll back only while production still names this version (otherwise
        :class:`AliasMovedError`); ``details`` (e.g. the evidence of an automatic rollback)
        go into the event.
        """
        def decide(current: AliasChange | None) -> tuple:
            stack = list(current.stack) if current else []
            if expected is not None and (current is None or current.version != expected):
                raise AliasMovedError(f"production of {self.model_name} is {current.version if current else None}, "
                                    f"not {expected}: nothing rolled back")
            if len(stack) < 2:
                raise RegistryError(f"model {self.model_name} has no earlier production version to roll back to"
                                    + (f" (production is {stack[-1]})" if stack else ""))
            return "rollback", stack[-2], stack[:-1], f"rollback: {reason}"

        change = self._change_alias("production", decide)
        self.record_event("rollback", **{**plain(dict(details or {})), "version": change.version,
                                         "previous": change.previous, "reason": reason,
                                         "generation": change.generation})
        return change.version

    # -- events -------------------------------------------------------------------------
    @classmethod
    def _tick(cls) -> int:
        """Strictly increasing nanoseconds within this process (wall clock across them)."""
        with cls._clock_lock:
            cls._last_ns = max(time.time_ns(), cls._last_ns + 1)
            return cls._last_ns

    def record_event(self, kind: str, **fields: Any) -> dict:
        """Append an event (one small object per event, so it works on object stores)."""
        if not isinstance(kind, str) or not _KIND_RE.match(kind):
            raise RegistryError(f"invalid event kind {kind!r}: lowercase letters, digits and '_'")
        stamp = self._tick()
        event = {**fields, "kind": kind, "model_name": self.model_name, "time": _now(),
                 "id": f"{stamp:020d}-{uuid.uuid4().hex[:12]}"}
        self.storage.write_json(self._rel("events", f"{event['id']}.json"), event)
        telemetry.count(EVENTS_METRIC, "registry events (register, promote, rollback, gate...) by model and kind",
                        {"model": self.model_name, "kind": kind})
        return event

    def events(self, kind: str | None = None, *, last: int | None = None) -> list[dict]:
        """Every recorded event, oldest first; only those of ``kind`` when given; of the ``last`` ones when given."""
        names = [n for n in self.storage.list(self._rel("events")) if n.endswith(".json")]
        names = names if last is None else names[-last:]
        found = [self.storage.read_json(self._rel("events", n)) for n in names]
        return [e for e in found if kind is None or e.get("kind") == kind]


__all__ = [
    "ALIASES",
    "AliasChange",
    "Registry",
    "is_version",
    "package_versions",
    "plain",
    "git_commit",
    "trusted_types",
    "check_declared_types",
    "dumps_model",
    "loads_model",
]
