"""Config loading: omitted sections take the built-in defaults; `ray-mlops config` prints the result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ray_mlops.config import load_config
from ray_mlops.errors import ConfigError
from ray_mlops.train.search import check_train_config

ROOT = Path(__file__).resolve().parents[1]
DATA_ONLY = {
    "data": {
        "root": "data/churn",
        "entity_key": "customer_id",
        "label": "churned",
        "sources": [{"name": "customers", "format": "csv", "path": "customers.csv",
                     "columns": {"tenure": {"type": "int", "min": 0}, "churned": {"type": "int", "min": 0, "max": 1}}}],
    }
}


def _write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_data_only_config_takes_every_other_section_from_the_defaults(tmp_path):
    config = load_config(_write(tmp_path, DATA_ONLY))
    defaults = load_config()
    assert config.data.entity_key == "customer_id"
    assert config.train == defaults.train and config.serve == defaults.serve and config.monitor == defaults.monitor
    check_train_config(config.train, config.data.task)  # trainable as written


def test_a_partial_section_keeps_the_other_defaults_and_listed_families_replace_them(tmp_path):
    document = {**DATA_ONLY, "serve": {"port": 9001},
                "train": {"num_samples": 2, "families": {"random_forest": {"search_space": {}}}}}
    config = load_config(_write(tmp_path, document))
    assert config.serve.port == 9001 and config.serve.max_batch_size == load_config().serve.max_batch_size
    assert config.train.num_samples == 2 and list(config.train.families) == ["random_forest"]


def test_a_regression_project_gets_regression_training_defaults(tmp_path):
    document = {"data": {**DATA_ONLY["data"], "task": "regression"}}
    config = load_config(_write(tmp_path, document))
    assert config.train.metric == "rmse" and config.train.mode == "min"
    assert "ridge" in config.train.families and "logistic_regression" not in config.train.families
    check_train_config(config.train, "regression")


def test_the_shipped_tabular_example_is_trainable():
    config = load_config(ROOT / "configs" / "tabular-example.yaml")
    check_train_config(config.train, config.data.task)


def test_a_typo_in_an_omitted_style_section_still_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="serve.prot"):
        load_config(_write(tmp_path, {**DATA_ONLY, "serve": {"prot": 1}}))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray_mlops.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.slow  # fast lane budget: covered by the full suite
def test_cli_config_prints_the_effective_config_with_the_token_masked(tmp_path):
    path = _write(tmp_path, {**DATA_ONLY, "serve": {"token": "s3cret"}})
    shown = _cli("--config", str(path), "config", "--json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["serve"]["token"] == "***" and "s3cret" not in shown.stdout
    assert document["train"]["families"] and document["data"]["label"] == "churned"
    as_yaml = yaml.safe_load(_cli("--config", str(path), "config").stdout)
    assert as_yaml == document


def test_cli_config_error_is_one_line(tmp_path):
    shown = _cli("--config", str(tmp_path / "missing.yaml"), "config")
    assert shown.returncode != 0 and shown.stderr.count("\n") == 1 and "config file not found" in shown.stderr
