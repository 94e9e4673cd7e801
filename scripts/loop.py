#!/usr/bin/env python
"""The whole closed loop from Python: what `ray-mlops demo` runs, with its options.

    python scripts/loop.py                       # default sizes (≈ 4 minutes on 2 cores)
    python scripts/loop.py --small               # a quick run
    ray job submit --working-dir . -- python scripts/loop.py --small

Generates data, ingests, trains, serves, starts the monitor, sends traffic without and
then with drift while new labeled data lands, and waits for the loop to close: drift
confirmed, retrained, gated, promoted and hot-swapped. Writes <workdir>/report.html.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ray_mlops.config import load_config
from ray_mlops.demo import DemoOptions, run_demo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="loop-demo")
    parser.add_argument("--small", action="store_true", help="small sizes for a quick run")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    options = DemoOptions(workdir=Path(args.workdir), port=args.port)
    if args.small:
        options = DemoOptions(workdir=Path(args.workdir), port=args.port, entities=600, traffic_entities=200,
                              drift_entities=300, new_entities=800, window=80, baseline_windows=3,
                              after_windows=1, trials=2, intensity=1.5)
    summary = run_demo(load_config(), options)
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
