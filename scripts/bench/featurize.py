"""Online featurization benchmark: ``featurize_instances`` now vs a baseline revision, one run.

Builds realistic request instances from a generated sample dataset (every modality, as
``ray_mlops.traffic.raw_records`` sends them), then times the working tree's
``featurize_instances`` and the same function at ``--baseline`` (a git revision: its whole
``ray_mlops`` package imported from a temporary copy, with its own config) on batches of 1, 8
and 64 instances. Prints the median and best time per call, the ratio, and whether the two
outputs agree (to 1e-12) on the columns both produce. ``--images learnable`` featurizes the
images with the representation a user's images get by default (summary, 16x16 grey grid,
HOG) instead of the sample's five statistics. No Ray needed.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/featurize.py [--baseline a9c60d6] [--repeat 30] [--images learnable]
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
BASELINE = "a9c60d6"  # before source plugins, raw text and learned image representations
SIZES = (1, 8, 64)


def baseline_featurizer(revision: str) -> Callable[[list[dict]], pd.DataFrame]:
    """``featurize_instances`` as it was at ``revision`` with that revision's default config."""
    package = f"baseline_{revision.replace('-', '_').replace('~', '_').replace('^', '_')}"
    folder = Path(tempfile.mkdtemp())
    archive = subprocess.run(["git", "archive", revision, "ray_mlops"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "ray_mlops").rename(folder / package)
    for module in (folder / package).rglob("*.py"):
        module.write_text(module.read_text().replace("ray_mlops.", f"{package}.").replace("from ray_mlops ", f"from {package} "))
    sys.path.insert(0, str(folder))
    config = importlib.import_module(f"{package}.config").load_config()
    schema = importlib.import_module(f"{package}.data.schema").feature_schema(config)
    featurize = importlib.import_module(f"{package}.data.online").featurize_instances
    return lambda instances: featurize(config, instances, schema)


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
    """Equal (to 1e-12) on the columns both produce."""
    common = [c for c in a.columns if c in b.columns]
    try:
        pd.testing.assert_frame_equal(a[common], b[common], check_exact=False, rtol=1e-12, atol=1e-12)
    except AssertionError:
        return False
    return True


def our_config(images: str):
    """The sample config; with ``images="learnable"`` its images get the built-in default representation."""
    from ray_mlops.config import load_config

    config = load_config()
    if images == "sample":
        return config
    raw = config.model_dump(mode="json")
    for source in raw["data"]["sources"]:
        if source["format"] == "image":
            source.pop("representation")
    return load_config(overrides={"data.sources": raw["data"]["sources"]})


def run(baseline: str, repeat: int, entities: int, images: str = "sample") -> list[dict]:
    from ray_mlops.data.online import featurize_instances
    from ray_mlops.data.schema import feature_schema

    config = our_config(images)
    schema = feature_schema(config)
    old = baseline_featurizer(baseline)
    contenders = {"baseline": old, "ours": lambda xs: featurize_instances(config, xs, schema)}
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
    lines = [f"{'instances':>9} {'baseline ms':>11} {'ours ms':>8} {'ours/base':>9} {'best base':>9} {'best ours':>9} {'agree':>5}"]
    for r in rows:
        lines.append(f"{r['n']:>9} {r['baseline_median']:>11.2f} {r['ours_median']:>8.2f} "
                     f"{r['ours_median'] / r['baseline_median']:>8.2f}x {r['baseline_best']:>9.2f} {r['ours_best']:>9.2f} "
                     f"{'yes' if r['equal'] else 'NO':>5}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the baseline implementation")
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per cell (after one warm-up call)")
    parser.add_argument("--entities", type=int, default=200, help="machines in the generated sample (>= 64)")
    parser.add_argument("--images", choices=["sample", "learnable"], default="sample",
                        help="the sample's image statistics, or a user's default representation (grid + HOG)")
    args = parser.parse_args()
    print(table(run(args.baseline, args.repeat, args.entities, args.images)))


if __name__ == "__main__":
    main()
