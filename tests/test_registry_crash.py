"""A driver killed (SIGKILL) in the middle of a registration leaves no half-written version.

A real child process registers versions with a large profile file in a loop; it is killed
while a version is being written. Every version readers see then loads and verifies, the
half-written one is invisible, and the next registration still succeeds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import make_pipeline

from helpers import wait_for
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage

CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import make_pipeline
    from ray_mlops.registry import Registry
    from ray_mlops.storage import Storage

    registry = Registry(Storage(sys.argv[1]), "m")
    model = make_pipeline(DummyClassifier()).fit(np.zeros((4, 1)), [0, 1, 1, 0])
    while True:
        registry.register(model, params={}, metrics={}, data_fingerprint="f", config_hash="c",
                          profile_files={"big.bin": os.urandom(32 << 20), "small.json": b"{}"})
""")


def _in_flight(store) -> bool:
    """A version folder being written: a claim present and no metadata.json yet."""
    registry = store / "registry" / "m"
    return any((d / ".claims").exists() and not (d / "metadata.json").exists()
               for d in registry.glob("v*") if d.is_dir())


def test_a_driver_killed_mid_registration_leaves_no_half_written_version(tmp_path):
    store = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store)], env=env)
    try:
        registry = Registry(Storage(str(store)), "m")
        wait_for(lambda: registry.versions() and _in_flight(store), timeout=120, interval=0.01,
                 message="a registration in flight after a complete one")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    visible = [m["version"] for m in registry.versions()]
    assert visible
    for version in visible:  # each visible version is whole: artifact and profile verify
        registry.load(version)
        assert len(registry.read_profile_file(version, "big.bin")) == 32 << 20
    folders = sorted(d.name for d in (store / "registry" / "m").glob("v*"))
    assert set(folders) - set(visible), "the kill did not land mid-registration"
    model = make_pipeline(DummyClassifier()).fit(np.zeros((4, 1)), [0, 1, 1, 0])
    after = registry.register(model, params={}, metrics={}, data_fingerprint="f", config_hash="c")
    assert after not in visible and registry.load(after) is not None
