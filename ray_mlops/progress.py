"""Progress of long work (ingest, the Tune search) for the people watching it.

The stages report to the ``ray_mlops.progress`` logger, which is silent unless a command
line turns it on with :func:`show_progress`: then each report is a plain timestamped line
on stderr when stderr is not a terminal (CI, ``ray job submit`` logs), and one compact line
rewritten in place when it is. Ray's own "The Dataset job will hang unless more CPUs are
freed up" warning is hidden by :func:`quiet_cpu_warning` where the CPUs it waits for are
the ingest's own tasks.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

log = logging.getLogger("ray_mlops.progress")
log.propagate = False
log.setLevel(logging.INFO)


def report(message: str, *args: object) -> None:
    """One progress report (a %-format string and its arguments)."""
    log.info(message, *args)


class LiveLineHandler(logging.Handler):
    """Each report overwrites the previous one on a terminal's current line."""

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        self.stream.write("\r\033[K" + line)
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()
        super().close()


def show_progress(stream: TextIO | None = None) -> logging.Handler:
    """Print progress reports on ``stream`` (default stderr); returns the handler installed."""
    stream = stream or sys.stderr
    if stream.isatty():
        handler: logging.Handler = LiveLineHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        formatter = logging.Formatter("%(asctime)s progress: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    log.addHandler(handler)
    return handler


def hide_progress(handler: logging.Handler) -> None:
    """Remove a handler :func:`show_progress` installed."""
    log.removeHandler(handler)
    handler.close()


CPU_WARNING = "will hang unless more CPUs"


class _OwnCpusFilter(logging.Filter):
    """Drops Ray Data's no-free-CPU warning when the cluster has CPUs (our own tasks hold them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if CPU_WARNING not in record.getMessage():
            return True
        import ray

        return not ray.cluster_resources().get("CPU", 0)


@contextmanager
def quiet_cpu_warning() -> Iterator[None]:
    """Hide Ray Data's "no available CPUs" warning while the ingest's own tasks run.

    Ray Data warns when no CPU is free at the moment a dataset executes; during an ingest
    that is the previous source's tasks finishing, not a hang. It still shows on a cluster
    with no CPUs at all.
    """
    logger = logging.getLogger("ray.data.dataset")
    quiet = _OwnCpusFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
