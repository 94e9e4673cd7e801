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

from dataclasses import dataclass


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


# -- the HTTP status of each error (the Serve ingress maps every package error through this) --
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class HttpStatus:
    """How the HTTP layer answers an error: ``status``, and ``Retry-After`` seconds for a 503."""

    status: int
    retry_after: int | None = None


_STATUS: tuple[tuple[type[RayMlopsError], int], ...] = (
    (VersionNotFoundError, 404),   # an unknown version or alias
    (ConfigError, 422),            # a request the configuration refuses
    (DataError, 422),              # a record that cannot be featurized (names the field)
    (StorageError, 503),           # storage unreachable or failing: retry later
    (ClusterError, 503),           # Ray unreachable
)


def http_status(exc: BaseException) -> HttpStatus:
    """The HTTP answer to ``exc``: 4xx for the client's input, 503 with Retry-After for the rest.

    >>> http_status(StorageError("down"))
    HttpStatus(status=503, retry_after=5)
    >>> http_status(VersionNotFoundError("v9")).status
    404
    """
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return HttpStatus(status, RETRY_AFTER_S if status == 503 else None)
    return HttpStatus(503, RETRY_AFTER_S)  # any other package error: a dependency of the service failed


__all__ = [
    "HttpStatus",
    "http_status",
    "RETRY_AFTER_S",
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
