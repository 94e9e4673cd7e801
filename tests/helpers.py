"""Small helpers shared by tests: free ports and bounded polling."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def metric_hook_actor():
    """An actor calling the monitor's metric hook (defined in a function: Ray pickles it by value)."""
    import ray

    @ray.remote(num_cpus=0)
    class HookActor:
        def emit(self, events: list[tuple[str, dict]]) -> None:
            from ray_mlops.monitor.actor import export_metrics

            for kind, payload in events:
                export_metrics(kind, payload)

    return HookActor
