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

The parts, one job each: :mod:`~ray_mlops.registry.versions` (claiming, writing and reading
version folders), :mod:`~ray_mlops.registry.aliases` (compare-and-swap and the alias history),
:mod:`~ray_mlops.registry.events` (the event log) and :mod:`~ray_mlops.registry.artifacts`
(names, lineage, the audited skops artifact); :class:`Registry` composes them.

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

from typing import Any

from ray_mlops.errors import VersionNotFoundError
from ray_mlops.registry.aliases import AliasBook, AliasChange
from ray_mlops.registry.artifacts import (
    ALIASES,
    check_alias,
    check_declared_types,
    check_name,
    dumps_model,
    git_commit,
    is_version,
    loads_model,
    package_versions,
    plain,
    serialize,
    trusted_types,
    version_number,
)
from ray_mlops.registry.events import EVENTS_METRIC, EventLog
from ray_mlops.registry.versions import ARTIFACT, METADATA, PROFILE_DIR, VersionStore
from ray_mlops.storage import Storage


class Registry:
    """Versions, aliases and events of one model under a storage root.

    ``storage`` may be a :class:`Storage` or a path/URI. Nothing is read or written until
    the first call, so constructing a registry never fails on an unreachable store.
    """

    def __init__(self, storage: Storage | str, model_name: str):
        self.storage = storage if isinstance(storage, Storage) else Storage(storage)
        self.model_name = check_name(model_name, "model name")
        self.root = f"registry/{self.model_name}"
        self._versions = VersionStore(self.storage, self.root, self.model_name)
        self._aliases = AliasBook(self.storage, self.root, self.model_name)
        self._events = EventLog(self.storage, self.root, self.model_name)

    def __repr__(self) -> str:
        return f"Registry({self.storage.location!r}, {self.model_name!r})"

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
        profile_files = {check_name(name, "profile file name"): data for name, data in (profile_files or {}).items()}
        parent = None if parent is None else self.resolve(parent)
        artifact = serialize(model, trusted_types)
        metrics = plain(dict(metrics))
        metadata = self._versions.add(version, artifact, profile_files, {
            "params": plain(dict(params)), "metrics": metrics, "data_fingerprint": data_fingerprint,
            "config_hash": config_hash, "parent": parent, "extra": plain(dict(extra or {})),
            "estimator": type(model).__name__, "classes": plain(list(getattr(model, "classes_", []))),
        })
        self.record_event("register", version=metadata["version"], parent=parent,
                          sha256=metadata["artifact"]["sha256"], data_fingerprint=data_fingerprint,
                          config_hash=config_hash, metrics=metrics)
        return metadata["version"]

    # -- reading ------------------------------------------------------------------------
    def versions(self) -> list[dict]:
        """The metadata of every complete version, oldest first."""
        return self._versions.all()

    def latest(self) -> str | None:
        """The newest complete version, or None for an empty registry."""
        complete = self.versions()
        return complete[-1]["version"] if complete else None

    def exists(self, version: str) -> bool:
        return self._versions.exists(version)

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
        if not self._versions.exists(ref):
            raise VersionNotFoundError(f"model {self.model_name} has no version {ref!r}")
        return ref

    def metadata(self, ref: str) -> dict:
        return self._versions.metadata(self.resolve(ref))

    def load(self, ref: str) -> Any:
        """The Pipeline of a version or alias; its sha256 is verified before deserializing."""
        meta = self.metadata(ref)
        artifact = self._versions.artifact(meta)
        return loads_model(artifact, trusted_types(artifact, meta["artifact"].get("declared_types", [])))

    def read_profile_file(self, ref: str, name: str) -> bytes:
        """A reference profile file stored with a version, verified against its sha256."""
        return self._versions.profile_file(self.metadata(ref), name)

    # -- aliases ------------------------------------------------------------------------
    def get_alias(self, name: str) -> str | None:
        state = self._aliases.state(name)
        return state.version if state else None

    def aliases(self) -> dict[str, str | None]:
        return {name: self.get_alias(name) for name in ALIASES}

    def alias_history(self, name: str) -> list[str]:
        """The versions a rollback walks back through, oldest first, ending with the current one."""
        state = self._aliases.state(name)
        return list(state.stack) if state else []

    def alias_log(self, name: str) -> list[AliasChange]:
        """Every change of alias ``name``, oldest first: append-only and complete."""
        return self._aliases.log(name)

    def set_alias(self, name: str, version: str, *, reason: str = "") -> str:
        """Point ``name`` (``production`` or ``candidate``) at ``version``, atomically.

        ``version`` may itself be an alias (``set_alias("production", "candidate")``);
        returns the version the alias now points at.
        """
        change = self._aliases.point(check_alias(name), self.resolve(version), reason, "set")
        self.record_event("alias", alias=name, version=change.version, previous=change.previous, reason=reason,
                          generation=change.generation)
        return change.version

    def promote(self, version: str, *, reason: str, scores: dict | None = None) -> str:
        """Make ``version`` (or the version an alias names) the production model.

        The previous production version is remembered, so :meth:`rollback` can return to it.
        """
        change = self._aliases.point("production", self.resolve(version), reason, "promote")
        self.record_event("promote", version=change.version, previous=change.previous, reason=reason,
                          scores=plain(dict(scores or {})), generation=change.generation)
        return change.version

    def rollback(self, reason: str = "manual", *, details: dict | None = None, expected: str | None = None) -> str:
        """Point ``production`` back at the version before it; returns that version.

        ``expected``: roll back only while production still names this version (otherwise
        :class:`AliasMovedError`); ``details`` (e.g. the evidence of an automatic rollback)
        go into the event.
        """
        change = self._aliases.step_back(reason, expected)
        self.record_event("rollback", **{**plain(dict(details or {})), "version": change.version,
                                         "previous": change.previous, "reason": reason,
                                         "generation": change.generation})
        return change.version

    # -- events -------------------------------------------------------------------------
    def record_event(self, kind: str, **fields: Any) -> dict:
        """Append an event (one small object per event, so it works on object stores)."""
        return self._events.record(kind, **fields)

    def events(self, kind: str | None = None, *, last: int | None = None) -> list[dict]:
        """Every recorded event, oldest first; only those of ``kind`` when given; of the ``last`` ones when given."""
        return self._events.read(kind, last=last)


__all__ = [
    "ALIASES",
    "ARTIFACT",
    "EVENTS_METRIC",
    "METADATA",
    "PROFILE_DIR",
    "AliasChange",
    "Registry",
    "is_version",
    "version_number",
    "package_versions",
    "plain",
    "git_commit",
    "trusted_types",
    "check_declared_types",
    "dumps_model",
    "loads_model",
]
