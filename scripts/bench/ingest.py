"""Ingestion benchmark: ours (Ray Data) against baselines, in one run on the same files.

1. Per format: reading each source with Ray Data vs reading the same files directly
   with pyarrow (CSV, Parquet, JSON Lines, text, images, time series).
2. The whole multi-source ingest at several sizes vs a single-process pandas
   implementation of the same validation, featurization and join (written below as the
   baseline, using the same featurizers), each in its own process so that the driver's
   peak memory (max RSS) is measured separately.

    .venv/bin/python scripts/bench/ingest.py                      # 10k and 100k entities
    .venv/bin/python scripts/bench/ingest.py --sizes 10000 100000 1000000

Prints times, ratios (ours / baseline) and driver peak memory per size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config(root: Path, storage: Path):
    from ray_mlops.config import load_config

    return load_config(overrides={"data.root": str(root), "storage": str(storage), "data.max_reject_rate": 1.0})


def _start_ray() -> None:
    import logging

    import ray

    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)


# -- the baseline: the same ingest, single process, pandas --------------------------
def pandas_ingest(root: Path, storage: Path) -> int:
    """Validate, featurize and join every source with pandas in this process."""
    from ray_mlops.data.schema import cast_features, feature_schema
    from ray_mlops.data.sources import sources_of

    config = _config(root, storage)
    key, schema = config.data.entity_key, feature_schema(config)
    merged = None
    for source in sources_of(config):
        entities = _pandas_source(source, Path(config.resolve_source_path(source.settings)), key)
        merged = entities if merged is None else merged.merge(entities, on=key, how="outer")
    table = cast_features(merged[merged[config.data.label].notna()], schema)
    storage.mkdir(parents=True, exist_ok=True)
    table.to_parquet(storage / "baseline.parquet", index=False)
    return len(table)


def _pandas_source(source, path: Path, key: str):
    """One source read with pandas / pyarrow on the driver, through the source type's own record and entity steps."""
    import pandas as pd

    settings = source.settings
    if settings.format in ("csv", "parquet"):
        batch = pd.read_csv(path, dtype=str) if settings.format == "csv" else pd.read_parquet(path)
    elif settings.format == "timeseries":
        batch = pd.read_parquet(path)
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file())
        batch = pd.DataFrame({"path": [str(f) for f in files], "bytes": [f.read_bytes() for f in files]})
    good, _ = source.records(batch)
    return source.entities(good)[0]


def ours_ingest(root: Path, storage: Path) -> int:
    from ray_mlops.data.ingest import ingest
    from ray_mlops.storage import Storage

    return ingest(_config(root, storage), Storage(str(storage))).rows


def run_one(kind: str, root: Path, storage: Path) -> None:
    """Child process: run one implementation and print its figures as JSON."""
    if kind == "ours":
        _start_ray()
    started = time.perf_counter()
    rows = (ours_ingest if kind == "ours" else pandas_ingest)(root, storage)
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started, "peak_rss_mb": _peak_rss_mb()}))


def _child(kind: str, root: Path, storage: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(root), str(storage)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- per-format reads ---------------------------------------------------------------
def format_reads(root: Path) -> list[tuple[str, float, float]]:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq
    import ray.data

    def files(folder: str) -> list[str]:
        return sorted(str(p) for p in (root / folder).iterdir())

    cases = {
        "csv": (lambda: ray.data.read_csv(str(root / "machines.csv")).materialize().count(), lambda: pacsv.read_csv(root / "machines.csv").num_rows),
        "parquet": (lambda: ray.data.read_parquet(str(root / "specs.parquet")).materialize().count(), lambda: pq.read_table(root / "specs.parquet").num_rows),
        "jsonl": (lambda: ray.data.read_binary_files(files("events")).materialize().count(), lambda: sum(pajson.read_json(f).num_rows for f in files("events"))),
        "text": (lambda: ray.data.read_binary_files(files("notes")).materialize().count(), lambda: len([Path(f).read_bytes() for f in files("notes")])),
        "image": (lambda: ray.data.read_binary_files(files("images")).materialize().count(), lambda: len([Path(f).read_bytes() for f in files("images")])),
        "timeseries": (lambda: ray.data.read_parquet(files("telemetry")).materialize().count(), lambda: sum(pq.read_table(f).num_rows for f in files("telemetry"))),
    }
    ray.data.read_parquet(str(root / "specs.parquet")).materialize()  # warm up Ray Data's workers
    results = []
    for name, (ours, baseline) in cases.items():
        t0 = time.perf_counter(); ours(); t1 = time.perf_counter(); baseline(); t2 = time.perf_counter()
        results.append((name, t1 - t0, t2 - t1))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--child", nargs=3, metavar=("KIND", "ROOT", "STORAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return

    from ray_mlops.data.generate import GenerateSpec, generate

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    rows_out = []
    for size in args.sizes:
        root = work / f"data-{size}"
        t0 = time.perf_counter()
        generate(root, GenerateSpec(entities=size, seed=0))
        print(f"generated {size} entities in {time.perf_counter() - t0:.1f}s", flush=True)
        if size == args.sizes[0]:
            _start_ray()
            print(f"\nper-format reads at {size} entities (Ray Data vs pyarrow direct, same files)")
            print(f"{'format':<11} {'ray data s':>10} {'pyarrow s':>10} {'ratio':>7}")
            for name, ours, base in format_reads(root):
                print(f"{name:<11} {ours:>10.2f} {base:>10.2f} {ours / base:>6.1f}x", flush=True)
            import ray

            ray.shutdown()
        ours = _child("ours", root, work / f"store-{size}")
        base = _child("pandas", root, work / f"base-{size}")
        assert ours["rows"] == base["rows"], (ours, base)
        rows_out.append((size, ours, base))
        print(f"\n{size} entities: ours {ours['seconds']:.1f}s (driver peak {ours['peak_rss_mb']:.0f} MB), "
              f"pandas {base['seconds']:.1f}s (peak {base['peak_rss_mb']:.0f} MB), ratio {ours['seconds'] / base['seconds']:.2f}", flush=True)

    print("\nwhole multi-source ingest (ours = Ray Data on 2 CPUs, baseline = single-process pandas)")
    print(f"{'entities':>9} {'ours s':>8} {'pandas s':>9} {'ratio':>6} {'ours driver MB':>15} {'pandas MB':>10} {'s per 1k':>9}")
    for size, ours, base in rows_out:
        print(f"{size:>9} {ours['seconds']:>8.1f} {base['seconds']:>9.1f} {ours['seconds'] / base['seconds']:>6.2f} "
              f"{ours['peak_rss_mb']:>15.0f} {base['peak_rss_mb']:>10.0f} {1000 * ours['seconds'] / size:>9.3f}")


if __name__ == "__main__":
    main()
