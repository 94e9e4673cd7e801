"""cluster.yaml: valid for Ray's cluster launcher, and every `ray-mlops` line in it runs.

The schema and the validator are Ray's own (``ray/autoscaler/ray-schema.json`` through
``ray.autoscaler._private.util.validate_config``), applied after ``prepare_config`` fills
in the provider defaults, as ``ray up`` does before it contacts the cloud.
"""

from __future__ import annotations

import copy
import re
import shlex

import click
import pytest
import yaml

from ray_mlops.cli import cli

ROOT_OPTIONS = {opt for param in cli.params if not getattr(param, "is_flag", False) for opt in param.opts}
INVOCATION = re.compile(r'(?:-- |")ray-mlops((?: [-\w./=:]+)+)')


@pytest.fixture(scope="module")
def cluster_text(request) -> str:
    return (request.config.rootpath / "cluster.yaml").read_text()


@pytest.fixture(scope="module")
def cluster(cluster_text) -> dict:
    return yaml.safe_load(cluster_text)


def test_cluster_yaml_validates_against_the_launchers_schema(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)  # raises jsonschema.ValidationError / ValueError when invalid
    assert prepared["provider"]["type"] == "aws"


def test_a_broken_cluster_yaml_is_refused_by_the_same_validator(cluster):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["cpu_worker"]["resources"] = {"CPU": "four"}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_head_plus_an_autoscaling_cpu_worker_type(cluster):
    types = cluster["available_node_types"]
    head = cluster["head_node_type"]
    workers = {name: spec for name, spec in types.items() if name != head}
    assert len(workers) == 1
    (worker,) = workers.values()
    assert 0 <= worker["min_workers"] < worker["max_workers"] <= cluster["max_workers"]
    assert worker["resources"]["CPU"] > 0 and "GPU" not in worker["resources"]


def test_setup_installs_ray_and_this_package_and_shares_storage(cluster):
    setup = "\n".join(cluster["setup_commands"])
    assert '"ray[default,serve,tune,data]==2.60.*"' in setup
    assert re.search(r'"ray-mlops @ git\+https://\S+"', setup)
    storage = re.search(r"export RAY_MLOPS_STORAGE=(\S+?)'", setup)
    assert storage and storage.group(1).startswith("s3://"), setup


def test_every_node_exports_prometheus_metrics(cluster):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in cluster[key] if "ray start" in c]
        assert start and all("--metrics-export-port=8080" in c for c in start), key
    assert any("--head" in c for c in cluster["head_start_ray_commands"])


def _invocations(text: str) -> list[list[str]]:
    return [shlex.split(m.group(1)) for m in INVOCATION.finditer(text)]


def test_the_documented_path_is_in_the_file(cluster_text):
    commands = {_command_path(args)[0] for args in _invocations(cluster_text)}
    assert {"train", "serve", "monitor"} <= commands
    assert "ray up cluster.yaml" in cluster_text
    assert "ray job submit --working-dir . -- ray-mlops" in cluster_text  # as the README and test_job_submit run it
    assert "ray job submit -- " not in cluster_text  # without --working-dir the job would not see the config file


def _command_path(args: list[str]) -> tuple[str, list[str], list[str]]:
    """``(command, root args, command args)`` of a ``ray-mlops`` argument list."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        assert args[i] in ROOT_OPTIONS, f"unknown ray-mlops option {args[i]}"
        i += 2
    assert i < len(args), f"no command in: ray-mlops {shlex.join(args)}"
    return args[i], args[:i], args[i + 1:]


def _resolve(group: click.Group, name: str, rest: list[str], parent: click.Context) -> None:
    command = group.get_command(parent, name)
    assert command is not None, f"`{name}` is not a ray-mlops command"
    ctx = command.make_context(name, list(rest), parent=parent)  # parses options, runs nothing
    if isinstance(command, click.Group):
        sub, *more = ctx.protected_args + ctx.args
        _resolve(command, sub, more, ctx)


def _cluster_invocations() -> list[list[str]]:
    from pathlib import Path

    return _invocations((Path(__file__).resolve().parents[1] / "cluster.yaml").read_text())


@pytest.mark.parametrize("args", _cluster_invocations(), ids=shlex.join)
def test_every_ray_mlops_command_in_cluster_yaml_exists(args):
    name, root_args, rest = _command_path(args)
    root = cli.make_context("ray-mlops", root_args + [name])
    _resolve(cli, name, rest, root)


@pytest.mark.parametrize("line, error", [
    ('ray job submit -- ray-mlops --address auto traim', AssertionError),
    ('ray exec cluster.yaml "ray-mlops --address auto serve --hots 0.0.0.0"', click.UsageError),
    ('ray exec cluster.yaml "ray-mlops registry promte v1"', AssertionError),
])
def test_the_command_check_catches_typos(line, error):
    (args,) = _invocations(line)
    name, root_args, rest = _command_path(args)
    with pytest.raises(error):
        _resolve(cli, name, rest, cli.make_context("ray-mlops", root_args + [name]))
