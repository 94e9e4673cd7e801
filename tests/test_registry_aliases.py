"""Alias compare-and-swap: concurrent promote/rollback writers never lose a change.

8 writers (threads, each with its own Registry, as separate drivers would have) promote
and roll back the same ``production`` alias at once, on a local folder and on the
loopback S3 server. Every change that returned must be in the alias's history exactly
once, the generations must be gapless, replaying the history must give the final rollback
stack, and ``production`` must be the last change's version.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import make_pipeline

from registry_fixtures import REGISTER_ARGS, storage  # noqa: F401
from ray_mlops.errors import AliasMovedError, RegistryError
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage

WRITERS = 8
ROUNDS = 4


def _tiny():
    return make_pipeline(DummyClassifier(strategy="prior")).fit(np.zeros((4, 1)), [0, 1, 1, 0])


def _writer(storage: Storage, index: int, start: threading.Barrier, done: list, failures: list) -> None:
    registry = Registry(Storage(storage.location), "m")  # its own client, as another driver
    start.wait()
    for round_ in range(ROUNDS):
        reason = f"w{index}-r{round_}"
        try:
            if (index + round_) % 3 == 2:
                registry.rollback(reason=reason)
                done.append(f"rollback: {reason}")
            else:
                registry.promote(f"v{1 + (index + round_) % 4}", reason=reason)
                done.append(reason)
        except RegistryError as exc:
            if "no earlier production" not in str(exc):
                failures.append(exc)
        except Exception as exc:  # noqa: BLE001 - any other error fails the test
            failures.append(exc)


def _replay(log) -> list[str]:
    stack: list[str] = []
    for change in log:
        if change.action == "rollback":
            stack.pop()
        elif not stack or stack[-1] != change.version:
            stack.append(change.version)
    return stack


def test_concurrent_promote_and_rollback_lose_nothing(storage):  # noqa: F811
    registry = Registry(storage, "m")
    for _ in range(4):
        registry.register(_tiny(), **REGISTER_ARGS)
    registry.promote("v1", reason="seed")
    start, done, failures = threading.Barrier(WRITERS), [], []
    threads = [threading.Thread(target=_writer, args=(storage, i, start, done, failures)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == [] and not any(t.is_alive() for t in threads)

    log = registry.alias_log("production")
    assert [c.generation for c in log] == list(range(1, len(log) + 1))
    assert sorted(c.reason for c in log[1:]) == sorted(done)  # every change exactly once
    for before, after in zip(log, log[1:]):
        assert after.previous == before.version
    assert registry.get_alias("production") == log[-1].version
    assert registry.alias_history("production") == list(log[-1].stack) == _replay(log)
    assert len(registry.events("promote")) + len(registry.events("rollback")) == len(log)


def test_a_rollback_that_expects_another_version_changes_nothing(tmp_path):
    registry = Registry(Storage(str(tmp_path)), "m")
    for _ in range(3):
        registry.register(_tiny(), **REGISTER_ARGS)
    registry.promote("v1", reason="a")
    registry.promote("v2", reason="b")
    registry.promote("v3", reason="operator")  # meanwhile, an operator shipped v3
    with pytest.raises(AliasMovedError, match="is v3, not v2"):
        registry.rollback(reason="probation of v2", expected="v2")
    assert registry.get_alias("production") == "v3" and len(registry.alias_log("production")) == 3
