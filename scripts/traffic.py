#!/usr/bin/env python
"""Send realistic traffic to a running ray_mlops service, with feedback labels.

Records are built from a generated dataset (``ray-mlops generate --out DIR``), with every
modality the API takes; each prediction's true label is posted back to ``/feedback``.

    python scripts/traffic.py --url http://127.0.0.1:8000 --data data --rate 100 --seconds 60
    python scripts/traffic.py --data drifted --repeat --seconds 120      # e.g. a drifted batch
"""

from __future__ import annotations

import argparse
import json
import time

from ray_mlops.traffic import Traffic, raw_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--data", default="data", help="a generated dataset folder")
    parser.add_argument("--rate", type=float, default=100.0, help="records per second")
    parser.add_argument("--per-request", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: send each record once)")
    parser.add_argument("--repeat", action="store_true", help="cycle through the records")
    parser.add_argument("--no-feedback", action="store_true")
    parser.add_argument("--token", default=None)
    args = parser.parse_args()

    records, labels = raw_records(args.data)
    traffic = Traffic(args.url, per_request=args.per_request, threads=args.threads, rate=args.rate,
                      feedback=not args.no_feedback, token=args.token)
    traffic.start(records, labels, repeat=args.repeat or args.seconds is not None)
    started = time.monotonic()
    try:
        while any(w.is_alive() for w in traffic._workers):
            if args.seconds is not None and time.monotonic() - started >= args.seconds:
                break
            time.sleep(1)
            snap = traffic.snapshot()
            print(f"{time.monotonic() - started:6.1f}s rows={snap['rows']} failed={snap['failed']} "
                  f"versions={snap['versions']} p50={snap['p50_ms']}ms", flush=True)
    except KeyboardInterrupt:
        pass
    traffic.stop()
    print(json.dumps(traffic.snapshot(), indent=2))


if __name__ == "__main__":
    main()
