"""The replica's metrics (``ray.util.metrics``, all named ``ray_mlops_*``), created lazily in the replica."""

from __future__ import annotations

import functools
from typing import Any

LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


@functools.lru_cache(maxsize=1)
def metrics() -> dict[str, Any]:
    """The replica's ``ray.util.metrics`` instruments, all named ``ray_mlops_*``."""
    from ray.util.metrics import Counter, Histogram

    from ray_mlops.telemetry import HeldGauge as Gauge  # stays on the endpoint between updates

    return {
        "requests": Counter("ray_mlops_requests", "HTTP requests by route and status", tag_keys=("route", "status")),
        "errors": Counter("ray_mlops_request_errors", "HTTP 4xx/5xx responses by route and status",
                          tag_keys=("route", "status")),
        "latency": Histogram("ray_mlops_request_latency_ms", "HTTP request latency (ms)",
                             boundaries=LATENCY_BUCKETS_MS, tag_keys=("route",)),
        "batch": Histogram("ray_mlops_batch_rows", "rows per model call", boundaries=BATCH_BUCKETS),
        "predictions": Counter("ray_mlops_predictions", "predictions by version and predicted class",
                               tag_keys=("version", "prediction")),
        "prediction_value": Histogram("ray_mlops_prediction_value", "regression outputs (<= 0.01 in the first bucket)",
                                      boundaries=[0.01, 0.1, 1, 10, 100, 1000, 10000], tag_keys=("version",)),
        "score": Histogram("ray_mlops_prediction_score", "probability of the predicted class",
                           boundaries=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99], tag_keys=("version",)),
        "version": Gauge("ray_mlops_serving_version", "1 for the version this replica serves", tag_keys=("version",)),
        "swap_failures": Counter("ray_mlops_swap_failures", "versions that failed to load", tag_keys=("version",)),
        "shadow_failures": Counter("ray_mlops_shadow_failures", "batches a shadow version was dropped from",
                                   tag_keys=("version",)),
        "log": Counter("ray_mlops_prediction_log_records", "prediction log records by outcome", tag_keys=("outcome",)),
        "log_buffered": Gauge("ray_mlops_prediction_log_buffered", "prediction log records waiting to flush"),
    }


def record_request(route: str, status: int, latency_ms: float) -> None:
    m = metrics()
    tags = {"route": route, "status": str(status)}
    m["requests"].inc(1, tags)
    if status >= 400:
        m["errors"].inc(1, tags)
    m["latency"].observe(latency_ms, {"route": route})


def record_outcomes(task: str, version: str, outcomes: list) -> None:
    """Rows per model call, predicted classes and their scores (classification) or values (regression)."""
    m = metrics()
    rows = sum(len(o.predictions) for o in outcomes if o.error is None)
    if rows:
        m["batch"].observe(rows)
    tags = {"version": version}
    counts: dict[str, int] = {}
    for outcome in outcomes:
        if task != "classification":
            for value in outcome.predictions:
                m["prediction_value"].observe(float(value), tags)
            continue
        for label, probs in zip(outcome.predictions, outcome.probabilities or []):
            counts[str(label)] = counts.get(str(label), 0) + 1
            m["score"].observe(max(probs), tags)
    for label, n in counts.items():
        m["predictions"].inc(n, {"version": version, "prediction": label})


__all__ = ["metrics", "record_request", "record_outcomes", "LATENCY_BUCKETS_MS", "BATCH_BUCKETS"]
