"""Ingest runs: which run folders something refers to, and collecting the rest.

Every ingest writes ``features/<fingerprint>/<run>/`` and moves ``features/latest.json``
to it last (see :mod:`ray_mlops.data.schema`). A run is *referenced* while
``latest.json`` names it; a run without ``report.json`` may still be being written and is
never collected. Registry versions keep their own copy of the reference profile, so no
version refers to a run folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ray_mlops.data.schema import FEATURES_DIR, LATEST, latest_ingest
from ray_mlops.storage import Storage


@dataclass(frozen=True)
class Collection:
    """What :func:`collect` found: runs it deleted (or would delete), and runs it kept."""

    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    dry_run: bool = True


def runs(storage: Storage) -> list[str]:
    """Every ingest run folder (``features/<fingerprint>/<run>``), sorted."""
    found = []
    for fingerprint in storage.list(FEATURES_DIR):
        if storage.is_dir(f"{FEATURES_DIR}/{fingerprint}"):
            found += [f"{FEATURES_DIR}/{fingerprint}/{run}" for run in storage.list(f"{FEATURES_DIR}/{fingerprint}")
                      if run.startswith("run-")]
    return found


def collect(storage: Storage, *, dry_run: bool = True) -> Collection:
    """Delete the finished runs ``latest.json`` does not name (only list them when ``dry_run``)."""
    latest = latest_ingest(storage).folder if storage.exists(LATEST) else None
    deleted, kept = [], []
    for run in runs(storage):
        if run == latest or not storage.exists(f"{run}/report.json"):
            kept.append(run)
            continue
        if not dry_run:
            storage.delete(run)
        deleted.append(run)
    return Collection(deleted, kept, dry_run)


__all__ = ["Collection", "collect", "runs"]
