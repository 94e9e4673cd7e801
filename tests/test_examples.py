"""The documented examples run as written: ``ray-mlops ingest`` → ``train`` → serve → one /predict.

Two configs with no ``train``/``serve`` sections of their own: the README's "Bring your
own data" YAML (read from README.md itself, so the test follows the docs) and the shipped
``configs/tabular-example.yaml``. Each runs from a fresh folder holding only the CSV the
config names (``data/churn/customers.csv``, generated here: the example ships no data),
with the config's own relative ``data.root`` and ``storage``; ``ingest`` and ``train`` go
through the real CLI, then the production model is deployed on real Serve and answers one
``/predict`` over HTTP.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
PLANS = ["basic", "plus", "pro"]


def readme_example() -> str:
    """The first YAML block of the README's "Bring your own data" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Bring your own data", 1)[1]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def write_customers(path: Path, n: int = 400, seed: int = 0) -> None:
    """A churn table matching the example configs; churn depends on tenure, plan and charges."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n)
    plan = rng.choice(PLANS, n)
    charges = np.round(rng.uniform(20, 120, n), 2)
    calls = rng.poisson(2, n).astype(float)
    logit = 1.5 - 0.06 * tenure + 0.02 * (charges - 70) + 0.8 * (plan == "basic") + 0.3 * calls
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({"customer_id": [f"c{i:05d}" for i in range(n)], "tenure_months": tenure, "plan": plan,
                          "monthly_charges": charges, "support_calls": calls, "churned": churned})
    frame.loc[rng.random(n) < 0.1, "support_calls"] = np.nan  # optional in the shipped example
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def run_cli(*args: str) -> str:
    from ray_mlops.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, f"ray-mlops {' '.join(args)} exited {result.exit_code}: {result.output}"
    return result.output


@pytest.fixture(params=["readme", "tabular-example"])
def example_config(request, tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    if request.param == "readme":
        path = tmp_path / "churn.yaml"
        path.write_text(readme_example(), encoding="utf-8")
    else:
        path = REPO / "configs" / "tabular-example.yaml"
    write_customers(tmp_path / "data" / "churn" / "customers.csv")
    return path


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_example_config_ingests_trains_and_serves(example_config, serve_instance):
    from ray_mlops.config import load_config
    from ray_mlops.registry import Registry
    from ray_mlops.serve import deploy as serving
    from ray_mlops.storage import Storage

    config = load_config(example_config)
    assert set(config.train.families), "omitted train section must take the default families"
    assert "400" in run_cli("--config", str(example_config), "ingest")
    run_cli("--config", str(example_config), "train")
    production = Registry(Storage(config.storage), config.model_name).get_alias("production")
    assert production is not None, "the first model of the example should be promoted"

    serve_section = config.serve.model_copy(update={"port": serve_instance, "app_name": "examples",
                                                    "min_replicas": 1, "max_replicas": 1, "num_cpus": 0.25})
    url = serving.deploy(config.model_copy(update={"serve": serve_section}))
    instance = {"tenure_months": 3, "plan": "basic", "monthly_charges": 99.5, "support_calls": 4}
    columns = config.data.label_source.columns
    response = httpx.post(f"{url}/predict", json={"instances": [{k: v for k, v in instance.items() if k in columns}]},
                          timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == production
    assert len(body["predictions"]) == 1 and body["predictions"][0] in (0, 1)
