"""Connecting to Ray: an embedded local Ray by default, or a cluster by address."""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from ray_mlops.config import Config
from ray_mlops.errors import ClusterError

log = logging.getLogger(__name__)


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
        if config.ray.num_cpus is not None:
            kwargs["num_cpus"] = config.ray.num_cpus
        kwargs["include_dashboard"] = False
        kwargs["_node_ip_address"] = "127.0.0.1"  # an embedded Ray talks only over loopback
    return kwargs


def connect(config: Config, address: str | None = None) -> None:
    """Connect this process to Ray, once.

    ``address`` (or ``config.ray.address``) ``None`` starts an embedded local Ray;
    ``"auto"`` joins the cluster this machine belongs to; ``"ray://host:port"`` or
    ``"host:port"`` reach a given one. An unreachable address is a :class:`ClusterError`.
    """
    if ray.is_initialized():
        return
    target = address or config.ray.address
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
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


def is_local_cluster() -> bool:
    """True when every alive node of the connected Ray runs on this machine."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return len({n["NodeManagerAddress"] for n in nodes}) <= 1


__all__ = ["connect", "is_local_cluster"]
