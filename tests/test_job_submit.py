"""``ray job submit`` for real: the README's cluster commands against a ``ray start --head``.

A head started with ``ray start --head`` on loopback (its own short temp dir, free ports,
2 CPUs), the sample dataset generated, then ``ray-mlops --address auto ... ingest`` and
``... train`` submitted with ``ray job submit`` to the head's dashboard, exactly as the
README's "On a cluster" section writes them. Both jobs must be SUCCEEDED, and the version
the job registered is read back with :class:`ray_mlops.registry.Registry`.

The head is stopped by killing the processes this test started (found by their session id
and by the temp dir in their command line), never with ``ray stop``: that would stop every
Ray on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers import free_port, wait_for

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DASHBOARD = "http://127.0.0.1:8265"  # as the README writes it; the test substitutes its free port
SUBMIT = f"ray job submit --address {DASHBOARD} --working-dir . --"  # ships the folder with job.yaml
ENTRYPOINT = "ray-mlops --address auto --config job.yaml"


@dataclass
class Head:
    """A ``ray start --head`` started by this test."""

    temp_dir: Path
    dashboard: str
    session_id: int
    env: dict


def _ours(head_sid: int, temp_dir: str) -> list[int]:
    """Pids of the processes this head runs: its session, or its temp dir on the command line."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            sid = os.getsid(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
        if sid == head_sid or temp_dir in cmdline:
            pids.append(int(entry.name))
    return pids


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop(head: Head) -> None:
    pids = _ours(head.session_id, str(head.temp_dir))
    _kill(pids, signal.SIGTERM)
    try:
        # what is still there after 5 s is killed (waiting 20 s cost the full suite 20 s on every run)
        wait_for(lambda: not _ours(head.session_id, str(head.temp_dir)), timeout=5, message="the head to stop")
    except AssertionError:
        _kill(_ours(head.session_id, str(head.temp_dir)), signal.SIGKILL)


@pytest.fixture
def ray_head(no_ray, monkeypatch):
    temp_dir = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))  # Ray's socket paths are length-limited
    port, dashboard_port = free_port(), free_port()
    token = temp_dir / "auth_token"  # Ray's token authentication, with this head's own token
    token.write_text(secrets.token_hex(32), encoding="utf-8")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("RAY_ADDRESS", None)
    command = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), "--num-cpus", "2",
               "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
               "--temp-dir", str(temp_dir), "--disable-usage-stats"]
    starter = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    head = Head(temp_dir, f"http://127.0.0.1:{dashboard_port}", starter.pid, env)
    try:
        output, _ = starter.communicate(timeout=120)
        assert starter.returncode == 0, f"ray start failed:\n{output}"
        wait_for(lambda: _jobs(head).returncode == 0, timeout=120, message="the head's dashboard")
        yield head
    finally:
        _stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _jobs(head: Head) -> subprocess.CompletedProcess:
    """``ray job list`` against this head (a subprocess: Ray reads its auth mode once per process)."""
    return subprocess.run([str(BIN / "ray"), "job", "list", "--address", head.dashboard], env=head.env,
                          capture_output=True, text=True, timeout=60)


def _submit(head: Head, cwd: Path, command: str) -> str:
    """Run one README command (its dashboard address replaced by this head's) in ``cwd``."""
    argv = command.replace(DASHBOARD, head.dashboard).split()
    argv[0] = str(BIN / argv[0])

    def attempt() -> subprocess.CompletedProcess | None:
        done = subprocess.run(argv, cwd=cwd, env=head.env, capture_output=True, text=True, timeout=600)
        # a fresh head's dashboard answers before its job agent has registered: Ray says to retry
        return None if "No available agent" in done.stderr else done

    done = wait_for(attempt, timeout=120, interval=2, message="the head's job agent")
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_readme_shows_the_commands_this_test_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## On a cluster", 1)[1]
    for stage in ("ingest", "train"):
        assert f"{SUBMIT} {ENTRYPOINT} {stage}" in section
    assert "ray start --head" in section


@pytest.mark.slow
@pytest.mark.multinode
@pytest.mark.timeout(900)
def test_job_submit_trains_and_registers(ray_head, tmp_path):
    from ray_mlops.config import load_config
    from ray_mlops.registry import Registry
    from ray_mlops.storage import Storage

    data, store = tmp_path / "data", tmp_path / "store"
    subprocess.run([str(BIN / "ray-mlops"), "generate", "--entities", "300", "--out", str(data)],
                   env=ray_head.env, check=True, capture_output=True, timeout=300)
    job = tmp_path / "job"
    job.mkdir()
    document = yaml.safe_load((REPO / "configs" / "default.yaml").read_text(encoding="utf-8"))
    document["storage"], document["data"]["root"] = str(store), str(data)
    document["train"].update(num_samples=2, max_concurrent_trials=1)
    (job / "job.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")

    started = time.monotonic()
    ingested = _submit(ray_head, job, f"{SUBMIT} {ENTRYPOINT} ingest")
    trained = _submit(ray_head, job, f"{SUBMIT} {ENTRYPOINT} train")
    assert "feature table: 300 rows" in ingested, ingested
    assert "registered:" in trained, trained

    jobs = _jobs(ray_head).stdout
    assert jobs.count("status=<JobStatus.SUCCEEDED") == 2 and "FAILED" not in jobs, jobs
    config = load_config(job / "job.yaml")
    registry = Registry(Storage(config.storage), config.model_name)
    version = registry.latest()
    assert version is not None and f"{config.model_name} {version}" in trained
    assert registry.metadata(version)["version"] == version
    print(f"ray job submit: ingest + train (2 trials) in {time.monotonic() - started:.0f} s, registered {version}")
