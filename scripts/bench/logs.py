"""Serving-log benchmark on a real S3-compatible server (moto) on loopback: ours against
plain pyarrow, in one run on the same objects.

1. **Write**: one feedback file per call through our ``PartitionedWriter`` (one PUT) vs
   pyarrow's usual way to a bucket (``create_dir`` of the partition, then the PUT).
2. **Read**: the whole log back with ``read_partitioned`` (one listing, files read on a
   pool of threads, schemas unified by name) vs a ``pyarrow.dataset`` over the folder
   (discovery, then ``to_table``).
3. **Group commit**: ``--clients`` concurrent ``/feedback``-sized writes through
   ``FeedbackLog`` vs one write each: files made and seconds.

    .venv/bin/python scripts/bench/logs.py --files 1000 --clients 8 --json /tmp/logs.json

Prints each pair and its ratio (ours / baseline); ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(name, value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _moto() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def _bucket(endpoint: str) -> str:
    import boto3

    name = f"bench-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}/store?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def _labels(i: int):
    import pandas as pd

    return pd.DataFrame({"request_id": f"r{i}", "row": [0], "label": [i % 2], "time": pd.Timestamp.now(tz="UTC")})


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_writes(storage, files: int) -> tuple[float, float]:
    """Seconds per file: ours (one PUT) and the baseline (create_dir, then the PUT)."""
    import posixpath

    from ray_mlops.contracts import PartitionedWriter, parquet_bytes, partition_of

    writer = PartitionedWriter(storage, "feedback", "ours")
    ours = _timed(lambda: [writer.write(_labels(i)) for i in range(files)])

    def baseline() -> None:
        for i in range(files):
            frame = _labels(i)
            target = storage.path("plain", partition_of(frame["time"].iloc[0]), f"plain-{i:08d}.parquet")
            storage.fs.create_dir(posixpath.dirname(target), recursive=True)
            with storage.fs.open_output_stream(target) as out:
                out.write(parquet_bytes(frame))

    return ours / files, _timed(baseline) / files


def bench_reads(storage, files: int) -> tuple[float, float]:
    """Seconds to read the whole log back: ours and a pyarrow dataset over the same folder."""
    import pyarrow.dataset as pads

    from ray_mlops.contracts import read_partitioned

    rows: dict[str, int] = {}
    ours = _timed(lambda: rows.update(ours=len(read_partitioned(storage, "feedback"))))
    partitioning = pads.partitioning(flavor="hive")
    base = _timed(lambda: rows.update(base=pads.dataset(storage.path("feedback"), filesystem=storage.fs, format="parquet",
                                                        partitioning=partitioning).to_table().num_rows))
    assert rows["ours"] == rows["base"] == files, rows
    return ours, base


def bench_group_commit(storage, requests: int, clients: int) -> dict[str, float]:
    """``requests`` label writes from ``clients`` concurrent callers: FeedbackLog vs one file each."""
    from ray_mlops.contracts import PartitionedWriter
    from ray_mlops.serve.predlog import FeedbackLog

    async def run(folder: str, grouped: bool) -> float:
        writer = PartitionedWriter(storage, folder, "w")
        log = FeedbackLog(writer)
        write = log.write if grouped else (lambda frame: asyncio.to_thread(writer.write, frame))
        queue = list(range(requests))

        async def client() -> None:
            while queue:
                await write(_labels(queue.pop()))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - started

    def files_in(folder: str) -> int:
        return sum(1 for rel in storage.list(folder, recursive=True) if rel.endswith(".parquet"))

    ours = asyncio.run(run("grouped", True))
    base = asyncio.run(run("each", False))
    return {"ours_s": ours, "baseline_s": base, "ours_files": files_in("grouped"), "baseline_files": files_in("each")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000, help="feedback files written, then read back")
    parser.add_argument("--clients", type=int, default=8, help="concurrent writers in the group-commit cell")
    parser.add_argument("--json", type=Path, help="write the cells here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from ray_mlops.storage import Storage

    proc, endpoint = _moto()
    try:
        storage = Storage(_bucket(endpoint))
        write_ours, write_base = bench_writes(storage, args.files)
        print(f"write, per file       ours {1000 * write_ours:7.1f} ms   pyarrow create_dir+put {1000 * write_base:7.1f} ms"
              f"   ratio {write_ours / write_base:.2f}", flush=True)
        read_ours, read_base = bench_reads(storage, args.files)
        print(f"read {args.files} files      ours {read_ours:7.2f} s    pyarrow dataset        {read_base:7.2f} s"
              f"    ratio {read_ours / read_base:.2f}", flush=True)
        group = bench_group_commit(storage, args.files, args.clients)
        print(f"{args.files} labels, {args.clients} clients  ours {group['ours_s']:6.2f} s in {group['ours_files']} files"
              f"   one file each {group['baseline_s']:6.2f} s in {group['baseline_files']} files"
              f"   ratio {group['ours_s'] / group['baseline_s']:.2f}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if args.json:
        cells = {"files": args.files, "clients": args.clients,
                 "write_ms": {"ours": 1000 * write_ours, "baseline": 1000 * write_base},
                 "read_s": {"ours": read_ours, "baseline": read_base}, "group_commit": group}
        args.json.write_text(json.dumps(cells, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
