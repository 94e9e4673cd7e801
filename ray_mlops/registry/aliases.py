"""Aliases (``production``, ``candidate``) changed by compare-and-swap, with their complete history.

An alias is the newest of its generation files (``0000000001.json``, …), each written
with a create-if-absent write (a hard link locally, ``If-None-Match: *`` on S3): a change
reads generation N and creates N + 1, and when another writer created it first it reads
again and retries. So concurrent promotions and rollbacks never lose one another, and the
generation files are the alias's complete, append-only history (:meth:`AliasBook.log`).
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import asdict, dataclass
from typing import Callable

from ray_mlops.errors import AliasMovedError, RegistryError
from ray_mlops.registry.artifacts import check_alias, now
from ray_mlops.storage import Storage

_CAS_ATTEMPTS = 200
_GENERATION_RE = re.compile(r"^[0-9]{10}\.json$")


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


# decide(current) -> (action, version, stack, reason) for the next generation
Decide = Callable[["AliasChange | None"], tuple]


class AliasBook:
    """The aliases under ``registry/<model>/aliases/`` of ``storage``."""

    def __init__(self, storage: Storage, root: str, model_name: str):
        self.storage, self.root, self.model_name = storage, root, model_name

    def _rel(self, name: str, *parts: str) -> str:
        return "/".join((self.root, "aliases", check_alias(name), *parts))

    def _generations(self, name: str) -> list[str]:
        return [n for n in self.storage.list(self._rel(name)) if _GENERATION_RE.match(n)]

    def state(self, name: str) -> AliasChange | None:
        """The alias's newest change (its current state), or None when it was never set."""
        names = self._generations(name)
        if names:
            return AliasChange.from_doc(self.storage.read_json(self._rel(name, names[-1])))
        legacy = f"{self.root}/aliases/{name}.json"  # a store written before compare-and-swap
        if self.storage.exists(legacy):
            doc = self.storage.read_json(legacy)
            return AliasChange(name, 0, doc["version"], None, tuple(doc["history"]), "set", doc.get("reason", ""), "")
        return None

    def log(self, name: str) -> list[AliasChange]:
        """Every change of alias ``name``, oldest first: append-only and complete."""
        return [AliasChange.from_doc(self.storage.read_json(self._rel(name, n))) for n in self._generations(name)]

    def change(self, name: str, decide: Decide) -> AliasChange:
        """Compare-and-swap: ``decide(current) -> (action, version, stack, reason)``; retried on conflict.

        The change is written as generation ``current + 1`` with a create-if-absent write,
        so of two concurrent writers one wins and the other re-reads and decides again.
        """
        for attempt in range(_CAS_ATTEMPTS):
            current = self.state(name)
            action, version, stack, reason = decide(current)
            change = AliasChange(name, (current.generation if current else 0) + 1, version,
                                 current.version if current else None, tuple(stack), action, reason, now())
            rel = self._rel(name, f"{change.generation:010d}.json")
            if self.storage.create(rel, json.dumps(change.to_doc(), sort_keys=True).encode()):
                return change
            time.sleep(random.uniform(0.002, 0.02) * min(attempt + 1, 10))
        raise RegistryError(f"alias {name!r} of {self.model_name}: still contended after {_CAS_ATTEMPTS} attempts")

    def point(self, name: str, version: str, reason: str, action: str) -> AliasChange:
        """Point alias ``name`` at ``version`` (an existing version name), pushing it on the stack."""

        def decide(current: AliasChange | None) -> tuple:
            stack = list(current.stack) if current else []
            if not stack or stack[-1] != version:
                stack.append(version)
            return action, version, stack, reason

        return self.change(name, decide)

    def step_back(self, reason: str, expected: str | None) -> AliasChange:
        """Point ``production`` at the version before it (only while it names ``expected``, when given)."""

        def decide(current: AliasChange | None) -> tuple:
            stack = list(current.stack) if current else []
            if expected is not None and (current is None or current.version != expected):
                raise AliasMovedError(f"production of {self.model_name} is {current.version if current else None}, "
                                      f"not {expected}: nothing rolled back")
            if len(stack) < 2:
                raise RegistryError(f"model {self.model_name} has no earlier production version to roll back to"
                                    + (f" (production is {stack[-1]})" if stack else ""))
            return "rollback", stack[-2], stack[:-1], f"rollback: {reason}"

        return self.change("production", decide)
