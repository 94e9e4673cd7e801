"""Drift monitoring: the statistics (:mod:`ray_mlops.monitor.drift`)."""

from ray_mlops.monitor.drift import (
    DriftDetector,
    DriftReport,
    DriftStream,
    ErrorDriftDetector,
    FeatureResult,
    PerformanceDriftDetector,
    PredictionDriftDetector,
    StreamVerdict,
)

__all__ = [
    "DriftDetector",
    "DriftReport",
    "DriftStream",
    "ErrorDriftDetector",
    "FeatureResult",
    "PerformanceDriftDetector",
    "PredictionDriftDetector",
    "StreamVerdict",
]
