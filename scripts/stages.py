#!/usr/bin/env python
"""The Python API, one stage at a time: what `ray-mlops generate/ingest/train/serve/monitor` do.

    python scripts/stages.py --workdir stages-demo            # laptop: embedded local Ray
    ray job submit --working-dir . -- python scripts/stages.py --address auto --workdir /shared/demo

Each stage is a plain function call with explicit arguments; they only meet through
storage (the feature table, the registry) and Ray names (the Serve app, the monitor).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ray_mlops.config import load_config
from ray_mlops.data.generate import GenerateSpec, generate
from ray_mlops.data.ingest import ingest
from ray_mlops.pipeline import train_and_promote
from ray_mlops.registry import Registry
from ray_mlops.runtime import connect
from ray_mlops.storage import Storage


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="stages-demo")
    parser.add_argument("--address", default=None, help="omit for an embedded local Ray; 'auto' on a cluster")
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--keep-serving", action="store_true", help="leave the app and the monitor running")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    config = load_config(overrides={"data.root": str(work / "data"), "storage": str(work / "store"),
                                    "train.num_samples": 3})
    storage = Storage(config.storage)

    # 1. data: heterogeneous sources (CSV, Parquet, JSON Lines, text, PNG, time series)
    print("generate:", generate(config.data.root, GenerateSpec(entities=args.entities, seed=0)))
    connect(config, args.address)

    # 2. ingest: Ray Data → one validated feature table + reference profile
    result = ingest(config, storage)
    print(f"ingest: {result.rows} rows, {len(result.schema.features)} features, fingerprint {result.fingerprint[:12]}")

    # 3. train: Ray Tune search → registry (lineage) → promotion gate
    outcome = train_and_promote(config, storage)
    print("train:", outcome.summary())
    registry = Registry(storage, config.model_name)
    print("registry:", [v["version"] for v in registry.versions()], registry.aliases())

    # 4. serve: the production version behind HTTP (Ray Serve)
    from ray_mlops.serve import deploy

    url = deploy.deploy(config)
    print("serve:", deploy.status(config))

    # 5. monitor: the detached drift monitor, with the Serve hot swap injected
    from ray_mlops import loop

    loop.start_monitor(config)
    print("monitor:", loop.status(config).monitor.reference)

    # 6. a few requests over HTTP, with feedback labels
    from ray_mlops.traffic import Traffic, raw_records

    records, labels = raw_records(config.data.root, limit=64)
    traffic = Traffic(url, rate=200).start(records, labels)
    traffic.wait(60)
    print("traffic:", traffic.snapshot())
    if not args.keep_serving:
        print("shutdown:", loop.shutdown(config))


if __name__ == "__main__":
    main()
