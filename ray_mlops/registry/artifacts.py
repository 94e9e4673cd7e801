"""What a registry version is made of: checked names, lineage, and the audited skops artifact.

Artifacts are skops files loaded with an explicit trusted-type list: the types skops
reports as untrusted must all be scikit-learn classes or numpy dtypes/scalars, or be
*declared* by the caller at registration; otherwise the artifact is refused (see
:func:`trusted_types`). The package's layout and guarantees are described in
:mod:`ray_mlops.registry`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import platform
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ray_mlops.errors import IntegrityError, RegistryError

ALIASES = ("production", "candidate")
_VERSION_RE = re.compile(r"^v[1-9][0-9]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TYPE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_PACKAGES = {"sklearn": "scikit-learn", "numpy": "numpy", "pandas": "pandas", "pyarrow": "pyarrow",
             "ray": "ray", "skops": "skops", "ray_mlops": "ray-mlops"}

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


def check_name(value: str, what: str) -> str:
    """``value`` when it is a safe file or model name; else :class:`RegistryError` naming ``what``."""
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
        raise RegistryError(f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-'")
    return value


def check_alias(name: str) -> str:
    if name not in ALIASES:
        raise RegistryError(f"unknown alias {name!r}: expected one of {', '.join(ALIASES)}")
    return name


def now() -> str:
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


def sha256(data: bytes) -> str:
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
@dataclass(frozen=True)
class Artifact:
    """A serialized model: its skops bytes, the types loading it trusts, and those the caller declared."""

    data: bytes
    trusted: list[str]
    declared: list[str]


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


def serialize(model: Any, declared: Any = ()) -> Artifact:
    """``model`` as an :class:`Artifact`, checked to load back (see :func:`dumps_model`)."""
    declared = check_declared_types(declared)
    data, trusted = dumps_model(model, declared)
    return Artifact(data, trusted, declared)


def loads_model(artifact: bytes, trusted: list[str]) -> Any:
    import skops.io as sio

    try:
        return sio.loads(artifact, trusted=trusted)
    except Exception as exc:
        raise IntegrityError(f"artifact cannot be deserialized: {exc}") from exc
