"""Bad cluster input: an unreachable address fails fast; local storage on many hosts is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import free_port
from ray_mlops.errors import StorageError
from ray_mlops.runtime import check_shared_storage, on_network_filesystem

CLI = [sys.executable, "-m", "ray_mlops.cli"]


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_unreachable_address_is_one_line_and_fast(address, tmp_path):
    target = address.format(port=free_port())  # nothing listens there
    started = time.monotonic()
    done = subprocess.run(CLI + ["--address", target, "--storage", str(tmp_path / "s"), "ingest"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ray-mlops: error: cannot reach Ray at " + target), done.stderr
    assert "is the cluster up?" in lines[0]
    assert elapsed < 15, f"took {elapsed:.1f}s"


@pytest.mark.parametrize("storage", ["/srv/ray-mlops", ".ray_mlops", "file:///srv/ray-mlops"])
def test_local_storage_on_several_hosts_is_refused(storage):
    with pytest.raises(StorageError, match=r"is a local path but the Ray cluster spans 2 hosts \(10\.0\.0\.1, 10\.0\.0\.2\)"):
        check_shared_storage(storage, ["10.0.0.1", "10.0.0.2", "10.0.0.2"])


@pytest.mark.parametrize("storage, nodes, network_fs", [
    ("s3://bucket/ray-mlops", ["10.0.0.1", "10.0.0.2"], False),
    ("gs://bucket/ray-mlops?x=1", ["10.0.0.1", "10.0.0.2"], False),
    ("/srv/ray-mlops", ["127.0.0.1", "127.0.0.1", "127.0.0.1"], False),  # several raylets, one host
    ("/srv/ray-mlops", ["10.0.0.1"], False),
    ("/mnt/efs/ray-mlops", ["10.0.0.1", "10.0.0.2"], True),  # a network filesystem mount
    (".ray_mlops", [], False),
])
def test_shared_or_single_host_storage_is_accepted(storage, nodes, network_fs):
    check_shared_storage(storage, nodes, network_filesystem=network_fs)


def test_many_hosts_are_summarised_in_one_line():
    hosts = [f"10.0.0.{i}" for i in range(1, 40)]
    with pytest.raises(StorageError) as info:
        check_shared_storage("/data", hosts)
    assert "spans 39 hosts (10.0.0.1, 10.0.0.10, 10.0.0.11, ...)" in str(info.value)
    assert "\n" not in str(info.value)


def test_network_filesystem_detection_reads_the_mount_table(tmp_path):
    mounts = Path("/proc/mounts").read_text().split("\n")
    fstype_of_root = next(line.split()[2] for line in mounts if line.split()[1:2] == ["/"])
    expected = fstype_of_root.startswith("fuse.") or fstype_of_root in {"nfs", "nfs4", "9p", "virtiofs"}
    assert on_network_filesystem("/") is expected
    assert on_network_filesystem(str(tmp_path / "not" / "there")) in (True, False)


def test_storage_comes_from_RAY_MLOPS_STORAGE(tmp_path, monkeypatch):
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import make_pipeline

    from ray_mlops.cli import cli
    from ray_mlops.registry import Registry
    from ray_mlops.storage import Storage

    store = tmp_path / "shared"
    model = make_pipeline(DummyClassifier()).fit([[0], [1]], [0, 1])
    Registry(Storage(str(store)), "failure-classifier").register(
        model, params={"family": "dummy"}, metrics={}, data_fingerprint="f", config_hash="c")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    from_env = runner.invoke(cli, ["registry", "list"], env={"RAY_MLOPS_STORAGE": str(store)})
    assert from_env.exit_code == 0, from_env.output
    assert "v1" in from_env.output and "dummy" in from_env.output
    flag_wins = runner.invoke(cli, ["--storage", str(tmp_path / "other"), "registry", "list"],
                              env={"RAY_MLOPS_STORAGE": str(store)})
    assert "no model versions registered yet" in flag_wins.output


def test_demo_refuses_a_named_storage_that_is_not_empty(tmp_path):
    store = tmp_path / "shared"
    (store / "registry").mkdir(parents=True)
    (store / "registry" / "keep.json").write_text("{}")
    done = subprocess.run(CLI + ["--storage", str(store), "demo", "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ray-mlops: error: demo: storage {store} is not empty"), done.stderr
    assert (store / "registry" / "keep.json").read_text() == "{}"  # never wiped
