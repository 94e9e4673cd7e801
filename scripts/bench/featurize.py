"""Online featurization benchmark: ``featurize_instances`` now vs a baseline revision, one run.

Builds realistic request instances from a generated sample dataset (every modality, as
``ray_mlops.traffic.raw_records`` sends them), then times the working tree's
``featurize_instances`` and the same function at ``--baseline`` (a git revision, imported
from a temporary copy of its ``ray_mlops/data`` featurization modules) on batches of 1, 8
and 64 instances. Prints the median and best time per call, the speed-up, and whether the
two outputs are equal (to 1e-12). No Ray needed.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/featurize.py [--baseline 6ee4c8c] [--repeat 30]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BASELINE = "6ee4c8c"  # the last revision before the array-based online featurizers
MODULES = ["featurize", "records", "schema", "quarantine", "online"]
SIZES = (1, 8, 64)


def baseline_featurizer(revision: str) -> Callable:
    """``featurize_instances`` as it was at ``revision``, imported from a temporary package."""
    package = f"baseline_{revision.replace('-', '_').replace('~', '_').replace('^', '_')}"
    folder = Path(tempfile.mkdtemp()) / package
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for module in MODULES:
        source = subprocess.run(["git", "show", f"{revision}:ray_mlops/data/{module}.py"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout
        source = source.replace("from ray_mlops.data import", f"from {package} import")
        for name in MODULES:
            source = source.replace(f"ray_mlops.data.{name}", f"{package}.{name}")
        (folder / f"{module}.py").write_text(source)
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module(f"{package}.online").featurize_instances


def request_instances(entities: int, seed: int) -> list[dict]:
    """Raw request records (without the entity key) for a freshly generated dataset."""
    from ray_mlops.data.generate import GenerateSpec, generate
    from ray_mlops.traffic import raw_records

    root = Path(tempfile.mkdtemp()) / "data"
    generate(root, GenerateSpec(entities=entities, seed=seed))
    records, _ = raw_records(root)
    return [{k: v for k, v in record.items() if k != "machine_id"} for record in records]


def timings(featurize: Callable, instances: list[dict], repeat: int) -> list[float]:
    """Milliseconds per call over ``repeat`` calls (after one warm-up call)."""
    featurize(instances)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        featurize(instances)
        times.append((time.perf_counter() - started) * 1000)
    return times


def same_output(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=1e-12)
    except AssertionError:
        return False
    return True


def run(baseline: str, repeat: int, entities: int) -> list[dict]:
    from ray_mlops.config import load_config
    from ray_mlops.data.online import featurize_instances
    from ray_mlops.data.schema import feature_schema

    config = load_config()
    schema = feature_schema(config)
    old = baseline_featurizer(baseline)
    contenders = {"baseline": lambda xs: old(config, xs, schema), "ours": lambda xs: featurize_instances(config, xs, schema)}
    instances = request_instances(entities, seed=0)
    rows = []
    for n in SIZES:
        batch = instances[:n]
        times = {name: timings(f, batch, repeat) for name, f in contenders.items()}
        rows.append({"n": n, **{f"{name}_{stat}": fn(t) for name, t in times.items()
                                for stat, fn in (("median", statistics.median), ("best", min))},
                     "equal": same_output(contenders["ours"](batch), contenders["baseline"](batch))})
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'instances':>9} {'baseline ms':>11} {'ours ms':>8} {'speed-up':>8} {'best base':>9} {'best ours':>9} {'equal':>5}"]
    for r in rows:
        lines.append(f"{r['n']:>9} {r['baseline_median']:>11.2f} {r['ours_median']:>8.2f} "
                     f"{r['baseline_median'] / r['ours_median']:>7.1f}x {r['baseline_best']:>9.2f} {r['ours_best']:>9.2f} "
                     f"{'yes' if r['equal'] else 'NO':>5}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the baseline implementation")
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per cell (after one warm-up call)")
    parser.add_argument("--entities", type=int, default=200, help="machines in the generated sample (>= 64)")
    args = parser.parse_args()
    print(table(run(args.baseline, args.repeat, args.entities)))


if __name__ == "__main__":
    main()
