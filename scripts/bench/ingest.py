"""Ingestion benchmark: ours (Ray Data) against baselines, in one run on the same files.

1. Per format: reading each source with Ray Data vs reading the same files directly
   with pyarrow (CSV, Parquet, JSON Lines, text, images, time series).
2. The whole multi-source ingest at several sizes vs a plain single-process pandas
   implementation of the same validation, featurization and join (below: each file, or
   chunk of small files, read and put through the source type's own record step; the
   good records concatenated, one entity step per source, outer merges on the key), each
   in its own process so that each one's peak memory (max RSS) is measured separately.
   Ours packs every source's records by entity bucket and runs one Ray Data hash
   ``repartition`` for all of them, then each source's entity step and the join per block
   (``ray_mlops.data.buckets``).
3. ``--ray-join``: the same ingest with Ray Data's own join instead (per source a hash
   ``repartition`` by key before its entity step, then ``Dataset.join`` of the sources: the
   design ours replaced), in the same run.

    .venv/bin/python scripts/bench/ingest.py                      # 10k and 100k entities
    .venv/bin/python scripts/bench/ingest.py --sizes 100000 1000000 --modalities table,events,timeseries \
        --json /tmp/ingest.json

``--modalities`` chooses the generated sources (as ``ray-mlops generate`` does), so 1M
entities does not need 2.5M image and note files. Prints times, ratios (ours / baseline)
and each process's peak memory per size; ``--json`` writes one object per size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

FILES_PER_CHUNK = 1024  # the baseline reads file-per-record sources in chunks of this many files


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config(root: Path, storage: Path):
    """The generated data's own config (``<root>/ray_mlops.yaml``: only its modalities), every reject allowed."""
    from ray_mlops.config import load_config

    return load_config(root / "ray_mlops.yaml", {"storage": str(storage), "data.max_reject_rate": 1.0})


def _start_ray() -> None:
    import logging

    import ray

    from ray_mlops.runtime import local_system_config

    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, _system_config=local_system_config(2))
    logging.getLogger("ray.data").setLevel(logging.WARNING)


# -- the baseline: the same ingest, single process, plain pandas ---------------------
def pandas_ingest(root: Path, storage: Path) -> int:
    """Validate, featurize and join every source with pandas in this process."""
    from ray_mlops.data.schema import cast_features, feature_schema
    from ray_mlops.data.sources import sources_of

    config = _config(root, storage)
    key, schema = config.data.entity_key, feature_schema(config)
    merged = None
    for source in sources_of(config):
        entities = _pandas_source(source, Path(config.resolve_source_path(source.settings)))
        merged = entities if merged is None else merged.merge(entities, on=key, how="outer")
    table = cast_features(merged[merged[config.data.label].notna()], schema)
    storage.mkdir(parents=True, exist_ok=True)
    table.to_parquet(storage / "baseline.parquet", index=False)
    return len(table)


def _batches(settings, path: Path):
    """A source's raw records as pandas frames: a table whole, a Parquet file each, small files in chunks."""
    import pandas as pd

    if settings.format == "csv":
        yield pd.read_csv(path, dtype=str)
    elif settings.format == "parquet":
        yield pd.read_parquet(path)
    elif settings.format == "timeseries":
        for file in sorted(path.rglob("*.parquet")):
            yield pd.read_parquet(file)
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for start in range(0, len(files), FILES_PER_CHUNK):
            chunk = files[start : start + FILES_PER_CHUNK]
            yield pd.DataFrame({"path": [str(f) for f in chunk], "bytes": [f.read_bytes() for f in chunk]})


def _pandas_source(source, path: Path):
    """One source through its type's own record step (batch by batch) and entity step (once)."""
    import pandas as pd

    good = pd.concat([source.records(batch)[0] for batch in _batches(source.settings, path)], ignore_index=True)
    return source.entities(good)[0]


# -- ours -----------------------------------------------------------------------------
def ours_ingest(root: Path, storage: Path) -> int:
    from ray_mlops.data.ingest import ingest
    from ray_mlops.storage import Storage

    return ingest(_config(root, storage), Storage(str(storage))).rows


class _Entities:
    """All records of some entities (one partition of a source's shuffle by key) → their entity rows, counted."""

    def __init__(self, source, quarantine, counts):
        self.source, self.quarantine, self.counts = source, quarantine, counts

    def __call__(self, records):
        import pyarrow as pa

        from ray_mlops.data.buckets import entity_rows

        rows = entity_rows(self.source, records.reset_index(drop=True), self.quarantine, self.counts)
        table = pa.Table.from_pandas(rows, preserve_index=False)
        for i, column in enumerate(table.schema):  # an empty partition's columns typed null: as strings, so blocks join
            if pa.types.is_null(column.type):
                table = table.set_column(i, column.name, table.column(i).cast(pa.string()))
        return table


def _ray_join_table(sources, listed, schema, steps):
    """Ray Data's own operators: per source read → record step → hash repartition by key → entity step; Dataset.join."""
    from ray_mlops.data import ingest as stage

    partitions = stage._partitions(sum(files.size for files in listed.values()))
    joined = None
    for source in sources:
        step = stage._RecordStep(source, steps.quarantine, steps.recorder)
        records = source.read(listed[source.name]).map_batches(step, batch_format="pandas", batch_size=source.record_batch_size)
        grouped = source.after_records(records).repartition(partitions, keys=[source.key])
        entities = grouped.map_batches(_Entities(source, steps.quarantine, steps.counts), batch_format="pandas", batch_size=None)
        joined = entities if joined is None else joined.join(entities, "full_outer", partitions, on=(schema.entity_key,))
    return joined.map_batches(stage._Finish(schema, steps.quarantine), batch_format="pandas", batch_size=None)


def ray_join_ingest(root: Path, storage: Path) -> int:
    """Our ingest stage (plan, counts, outputs, publish) with :func:`_ray_join_table` as its table."""
    from ray_mlops.data import ingest as stage

    stage.build_table = _ray_join_table
    return ours_ingest(root, storage)


IMPLEMENTATIONS = {"ours": ours_ingest, "raydata-join": ray_join_ingest, "pandas": pandas_ingest}


def run_one(kind: str, root: Path, storage: Path) -> None:
    """Child process: run one implementation and print its figures as JSON."""
    if kind != "pandas":
        _start_ray()
    started = time.perf_counter()
    rows = IMPLEMENTATIONS[kind](root, storage)
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started, "peak_rss_mb": _peak_rss_mb()}))


def _child(kind: str, root: Path, storage: Path) -> dict:
    shutil.rmtree(storage, ignore_errors=True)
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
        "csv": ("machines.csv", lambda: ray.data.read_csv(str(root / "machines.csv")).materialize().count(), lambda: pacsv.read_csv(root / "machines.csv").num_rows),
        "parquet": ("specs.parquet", lambda: ray.data.read_parquet(str(root / "specs.parquet")).materialize().count(), lambda: pq.read_table(root / "specs.parquet").num_rows),
        "jsonl": ("events", lambda: ray.data.read_binary_files(files("events")).materialize().count(), lambda: sum(pajson.read_json(f).num_rows for f in files("events"))),
        "text": ("notes", lambda: ray.data.read_binary_files(files("notes")).materialize().count(), lambda: len([Path(f).read_bytes() for f in files("notes")])),
        "image": ("images", lambda: ray.data.read_binary_files(files("images")).materialize().count(), lambda: len([Path(f).read_bytes() for f in files("images")])),
        "timeseries": ("telemetry", lambda: ray.data.read_parquet(files("telemetry")).materialize().count(), lambda: sum(pq.read_table(f).num_rows for f in files("telemetry"))),
    }
    ray.data.read_csv(str(root / "labels.csv")).materialize()  # warm up Ray Data's workers
    results = []
    for name, (where, ours, baseline) in cases.items():
        if not (root / where).exists():
            continue
        t0 = time.perf_counter(); ours(); t1 = time.perf_counter(); baseline(); t2 = time.perf_counter()
        results.append((name, t1 - t0, t2 - t1))
    return results


@dataclass
class Cell:
    """One size's figures (what ``--json`` writes)."""

    entities: int
    modalities: list[str]
    seconds: float
    baseline_seconds: float
    ratio: float
    driver_peak_mb: float
    baseline_peak_mb: float
    ray_join_seconds: float | None = None  # with --ray-join: Ray Data's Dataset.join design
    ray_join_ratio: float | None = None  # ours / Ray Data's join


def _dataset(work: Path, size: int, modalities: tuple[str, ...]) -> Path:
    """Generated data for ``size`` entities (kept in ``work`` and reused while its spec is the same)."""
    import yaml

    from ray_mlops.data.generate import GenerateSpec, generate, sample_config

    root = work / f"data-{size}-{'-'.join(modalities)}"
    spec = GenerateSpec(entities=size, seed=0, modalities=modalities)
    marker = root / ".bench-spec"
    if marker.exists() and marker.read_text() == repr(spec):
        return root
    t0 = time.perf_counter()
    generate(root, spec)
    (root / "ray_mlops.yaml").write_text(yaml.safe_dump(sample_config({}, root, modalities)), encoding="utf-8")
    marker.write_text(repr(spec))
    print(f"generated {size} entities ({', '.join(modalities)}) in {time.perf_counter() - t0:.1f}s", flush=True)
    return root


def _print_format_reads(root: Path, size: int) -> None:
    _start_ray()
    print(f"\nper-format reads at {size} entities (Ray Data vs pyarrow direct, same files)")
    print(f"{'format':<11} {'ray data s':>10} {'pyarrow s':>10} {'ratio':>7}")
    for name, ours, base in format_reads(root):
        print(f"{name:<11} {ours:>10.2f} {base:>10.2f} {ours / base:>6.1f}x", flush=True)
    import ray

    ray.shutdown()


def _median(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def _measure(work: Path, size: int, modalities: tuple[str, ...], ray_join: bool, repeats: int = 1) -> Cell:
    """One size's cell; with ``repeats`` > 1 the implementations alternate and each one's median run counts."""
    root = _dataset(work, size, modalities)
    kinds = ["ours", "pandas"] + (["raydata-join"] if ray_join else [])
    seen: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for _ in range(repeats):  # alternated, so a slow spell of a shared machine hits each of them
        for kind in kinds:
            seen[kind].append(_child(kind, root, work / f"{kind}-{size}"))
    ours, base = _median(seen["ours"]), _median(seen["pandas"])
    joined = _median(seen["raydata-join"]) if ray_join else None
    if repeats > 1:
        print(f"\n{size} entities, every run (s): " + "; ".join(
            kind + " " + ", ".join(f"{r['seconds']:.1f}" for r in runs) for kind, runs in seen.items()), flush=True)
    assert ours["rows"] == base["rows"] == (joined or ours)["rows"], (ours, base, joined)
    cell = Cell(size, list(modalities), round(ours["seconds"], 2), round(base["seconds"], 2),
                round(ours["seconds"] / base["seconds"], 3), round(ours["peak_rss_mb"]), round(base["peak_rss_mb"]))
    if joined:
        cell.ray_join_seconds = round(joined["seconds"], 2)
        cell.ray_join_ratio = round(ours["seconds"] / joined["seconds"], 3)
    print(f"\n{size} entities: ours {cell.seconds:.1f}s (driver peak {cell.driver_peak_mb:.0f} MB), pandas "
          f"{cell.baseline_seconds:.1f}s (peak {cell.baseline_peak_mb:.0f} MB), ratio {cell.ratio:.2f}", flush=True)
    if joined:
        print(f"{size} entities: Ray Data's Dataset.join {cell.ray_join_seconds:.1f}s, ours / it {cell.ray_join_ratio:.2f}",
              flush=True)
    return cell


def _print_table(cells: list[Cell]) -> None:
    print("\nwhole multi-source ingest (ours = Ray Data on 2 CPUs, baseline = single-process pandas)")
    print(f"{'entities':>9} {'ours s':>8} {'pandas s':>9} {'ratio':>6} {'ours driver MB':>15} {'pandas MB':>10} "
          f"{'s per 1k':>9}")
    for c in cells:
        print(f"{c.entities:>9} {c.seconds:>8.1f} {c.baseline_seconds:>9.1f} {c.ratio:>6.2f} {c.driver_peak_mb:>15.0f} "
              f"{c.baseline_peak_mb:>10.0f} {1000 * c.seconds / c.entities:>9.3f}")
    for small, large in zip(cells, cells[1:]):
        print(f"{small.entities} → {large.entities} entities: time x{large.seconds / small.seconds:.1f} "
              f"for x{large.entities / small.entities:.0f} the entities")


def main() -> None:
    from ray_mlops.data.generate import MODALITIES, parse_modalities

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--modalities", default=",".join(MODALITIES), help="generated sources (as ray-mlops generate)")
    parser.add_argument("--no-format-reads", action="store_true", help="skip the per-format read comparison")
    parser.add_argument("--work", type=Path, help="folder for generated data (kept and reused across runs)")
    parser.add_argument("--json", type=Path, help="write the cells here")
    parser.add_argument("--ray-join", action="store_true", help="also run the ingest on Ray Data's Dataset.join")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each implementation per size, alternated (medians)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "ROOT", "STORAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    modalities = parse_modalities(args.modalities)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    if not args.no_format_reads:
        _print_format_reads(_dataset(work, args.sizes[0], modalities), args.sizes[0])
    cells = [_measure(work, size, modalities, args.ray_join, args.repeats) for size in args.sizes]
    _print_table(cells)
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in cells], indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
