"""Connecting to Ray: an embedded local Ray by default, or a cluster by address."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Iterable

import ray

from ray_mlops.config import Config
from ray_mlops.errors import ClusterError, StorageError

log = logging.getLogger(__name__)


#: Worker pools a Ray Data shuffle keeps apart: ordinary tasks, shuffle maps, shuffle reduces
#: (Ray 2.60 runs each in workers of its own runtime env).
WORKER_POOLS = 3


def local_system_config(num_cpus: int | None) -> dict[str, Any]:
    """``_system_config`` of an embedded local Ray: idle workers kept for every worker pool.

    Ray keeps as many idle workers as CPUs and kills the rest after a second; the ingest's
    shuffles use three pools, so on 2 CPUs workers were killed and restarted all along
    (39 worker processes for one 5k-entity ingest; 12 with idle workers kept).

    >>> local_system_config(2)
    {'num_workers_soft_limit': 6}
    """
    return {"num_workers_soft_limit": WORKER_POOLS * (num_cpus or os.cpu_count() or 1)}


def _init_kwargs(config: Config, address: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "namespace": config.ray.namespace,
        "ignore_reinit_error": True,
        "logging_level": logging.WARNING,
        "log_to_driver": os.environ.get("RAY_MLOPS_WORKER_LOGS", "0") == "1",
    }
    if address:
        kwargs["address"] = address
    else:
        kwargs["address"] = "local"  # a new embedded Ray, never a cluster recorded in /tmp/ray
        if config.ray.num_cpus is not None:
            kwargs["num_cpus"] = config.ray.num_cpus
        kwargs["include_dashboard"] = False
        kwargs["_node_ip_address"] = "127.0.0.1"  # an embedded Ray talks only over loopback
        kwargs["_system_config"] = local_system_config(config.ray.num_cpus)
    return kwargs


PROBE_TIMEOUT_S = 5.0
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph",
                                 "glusterfs", "beegfs", "efs", "9p", "virtiofs"})


def _endpoint(target: str) -> tuple[str, int] | None:
    """The ``(host, port)`` a Ray address leads to, or ``None`` when it cannot be told.

    >>> _endpoint("ray://10.0.0.5:10001"), _endpoint("127.0.0.1:6379"), _endpoint("[::1]:6379")
    (('10.0.0.5', 10001), ('127.0.0.1', 6379), ('::1', 6379))
    """
    if target == "auto":
        try:  # the address `ray start` recorded on this machine (what ray.init would use)
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # noqa: BLE001 - no recorded cluster: ray.init says so quickly
            return None
    host, sep, port = target.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _probe(target: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at the address (``ray.init`` would retry ~40 s)."""
    endpoint = _endpoint(target)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterError(f"cannot reach Ray at {target} ({endpoint[0]}:{endpoint[1]}: {reason}); "
                           "is the cluster up? (`ray status` on its head)") from exc


def connect(config: Config, address: str | None = None) -> None:
    """Connect this process to Ray, once.

    ``address`` (or ``config.ray.address``) ``None`` starts an embedded local Ray;
    ``"auto"`` joins the cluster this machine belongs to; ``"ray://host:port"`` or
    ``"host:port"`` reach a given one. An unreachable address is a :class:`ClusterError`
    within :data:`PROBE_TIMEOUT_S` seconds.
    """
    if ray.is_initialized():
        return
    target = address or config.ray.address
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if target:
        _probe(target)
    try:
        ray.init(**_init_kwargs(config, target))
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = target or "a new local Ray"
        raise ClusterError(f"cannot connect to Ray at {where}: {exc}") from exc
    quiet_ray_data_console()


def quiet_ray_data_console() -> None:
    """Keep Ray Data's per-dataset INFO lines out of the terminal (they stay in its log file)."""
    import ray.data  # noqa: F401  (configures the "ray.data" logger)

    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler":
            handler.setLevel(logging.WARNING)


def node_addresses() -> list[str]:
    """The host address of every alive node of the connected Ray."""
    return [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]


def is_local_cluster() -> bool:
    """True when every alive node of the connected Ray runs on this machine."""
    return len(set(node_addresses())) <= 1


def on_network_filesystem(path: str) -> bool:
    """True when ``path`` lives on a network filesystem mount (NFS, EFS, Lustre, FUSE...)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return False
    target = str(Path(path).expanduser().resolve())
    best = max((m for m in mounts if len(m) == 2 and (target + "/").startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return best is not None and (best[1] in NETWORK_FILESYSTEMS or best[1].startswith("fuse."))


def check_shared_storage(storage: str, node_addresses: Iterable[str], *, network_filesystem: bool = False) -> None:
    """Refuse a local storage path when the nodes run on more than one host.

    Every node must see the same registry, feature tables and checkpoints; a local folder
    is a different folder on each host. Object storage URIs are always accepted, and so
    is a local path on a network filesystem mount (``network_filesystem=True``).

    >>> check_shared_storage("s3://bucket/ray-mlops", ["10.0.0.1", "10.0.0.2"])
    >>> check_shared_storage("/tmp/store", ["127.0.0.1", "127.0.0.1"])
    >>> check_shared_storage("/tmp/store", ["10.0.0.1", "10.0.0.2"])
    Traceback (most recent call last):
    ...
    ray_mlops.errors.StorageError: storage '/tmp/store' is a local path but the Ray cluster spans 2 hosts (10.0.0.1, 10.0.0.2): set --storage or RAY_MLOPS_STORAGE to shared storage (s3://bucket/prefix, gs://...) or a network filesystem mount
    """
    hosts = sorted(set(node_addresses))
    is_local = "://" not in storage or storage.startswith("file://")
    if len(hosts) > 1 and is_local and not network_filesystem:
        shown = ", ".join(hosts[:3]) + (", ..." if len(hosts) > 3 else "")
        raise StorageError(
            f"storage {storage!r} is a local path but the Ray cluster spans {len(hosts)} hosts ({shown}): "
            "set --storage or RAY_MLOPS_STORAGE to shared storage (s3://bucket/prefix, gs://...) "
            "or a network filesystem mount")


def ensure_shared_storage(storage: str) -> None:
    """:func:`check_shared_storage` against the connected cluster's nodes."""
    local_path = "://" not in storage or storage.startswith("file://")
    shared = local_path and on_network_filesystem(storage.removeprefix("file://"))
    check_shared_storage(storage, node_addresses(), network_filesystem=shared)


__all__ = ["connect", "is_local_cluster", "node_addresses", "check_shared_storage",
           "ensure_shared_storage", "on_network_filesystem"]
