"""The one exception tree of ray_mlops.

Every error the package raises on purpose derives from :class:`RayMlopsError`.
Lower-level errors (pyarrow, Ray, scikit-learn, OS) are translated where they cross
into our code with ``raise SomeError(msg) from exc``; the CLI prints ``str(error)``
as one line and exits non-zero, the HTTP layer maps them to status codes.

    RayMlopsError
    ├── ConfigError          bad or inconsistent configuration
    ├── StorageError         a storage URI that cannot be reached, read or written
    ├── ClusterError         Ray cannot be started or reached
    ├── DataError            source data that cannot be ingested
    │   └── RejectRateError  too many records quarantined
    ├── TrainError           training cannot run or produced nothing usable
    ├── RegistryError        model registry problems
    │   ├── VersionNotFoundError
    │   ├── VersionExistsError
    │   ├── AliasMovedError  an alias no longer names the version a change expected
    │   └── IntegrityError   artifact hash mismatch
    ├── ServingError         the inference service cannot be deployed or queried
    └── MonitorError         the drift monitor cannot run
"""

from __future__ import annotations


class RayMlopsError(Exception):
    """Base class of every error ray_mlops raises on purpose."""


class ConfigError(RayMlopsError):
    """The configuration is invalid; the message names the file and the key."""


class StorageError(RayMlopsError):
    """A storage location cannot be reached, read or written."""


class ClusterError(RayMlopsError):
    """Ray cannot be started or the cluster address cannot be reached."""


class DataError(RayMlopsError):
    """Input data cannot be ingested; the message names the source or file."""


class RejectRateError(DataError):
    """More records were quarantined than the configured threshold allows."""


class TrainError(RayMlopsError):
    """Training cannot run or produced no usable model."""


class RegistryError(RayMlopsError):
    """A model registry operation failed."""


class VersionNotFoundError(RegistryError):
    """The requested model version or alias does not exist."""


class VersionExistsError(RegistryError):
    """A version with this name is already registered (versions are immutable)."""


class AliasMovedError(RegistryError):
    """An alias changed under a conditional update (e.g. a rollback expecting another version)."""


class IntegrityError(RegistryError):
    """A stored artifact does not match its recorded sha256; it is never loaded."""


class ServingError(RayMlopsError):
    """The inference service cannot be deployed, reconfigured or queried."""


class MonitorError(RayMlopsError):
    """The drift monitor cannot be started or fed."""


__all__ = [
    "RayMlopsError",
    "ConfigError",
    "StorageError",
    "ClusterError",
    "DataError",
    "RejectRateError",
    "TrainError",
    "RegistryError",
    "VersionNotFoundError",
    "VersionExistsError",
    "AliasMovedError",
    "IntegrityError",
    "ServingError",
    "MonitorError",
]
