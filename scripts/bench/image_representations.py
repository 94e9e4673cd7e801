"""Image representations on real scans: 5-fold CV accuracy of logistic regression, and timing.

scikit-learn's ``load_digits`` (1,797 8×8 grey scans of 10 digits, shipped with the package)
as RGB in [0, 1]; each :class:`~ray_mlops.data.image_features.ImageRepresentation` below is
computed by ``represent`` and fed to a standardised logistic regression, against the
baseline of the same model on the raw 64 pixels. The last rows go the image source's way:
each scan written as a PNG and decoded by ``decode_image`` at the source's default size 32. Also times ``represent`` on one image (an
online request) and on the whole set (a batch). No Ray needed.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/image_representations.py
"""

from __future__ import annotations

import io
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from ray_mlops.data.image_features import ColorHistogram, Hog, ImageRepresentation, PixelGrid, represent  # noqa: E402
from ray_mlops.data.sources.image import decode_image  # noqa: E402

REPRESENTATIONS = {
    "summary (today's 5 statistics)": ImageRepresentation(),
    "pixels gray 8": ImageRepresentation(summary=False, pixels=PixelGrid(size=8)),
    "pixels gray 16": ImageRepresentation(summary=False, pixels=PixelGrid(size=16)),
    "pixels gray 32": ImageRepresentation(summary=False, pixels=PixelGrid(size=32)),
    "hog 16 (ppc 4)": ImageRepresentation(summary=False, hog=Hog(size=16, pixels_per_cell=4)),
    "hog 32 (ppc 8)": ImageRepresentation(summary=False, hog=Hog(size=32, pixels_per_cell=8)),
    "pixels 16 + hog 16": ImageRepresentation(summary=False, pixels=PixelGrid(size=16), hog=Hog(size=16, pixels_per_cell=4)),
    "summary + pixels 16 + hog 16 + hist": ImageRepresentation(
        pixels=PixelGrid(size=16), hog=Hog(size=16, pixels_per_cell=4), color_histogram=ColorHistogram()
    ),
}


def accuracy(features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_score(model, features, labels, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    return float(scores.mean()), float(scores.std())


def per_call(fn, repeat: int = 30) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    digits = load_digits()
    images = np.repeat((digits.images / 16.0)[..., None], 3, axis=3)
    raw_mean, raw_std = accuracy(digits.data, digits.target)
    print(f"load_digits: {len(images)} images 8x8, 10 classes; logistic regression, 5-fold CV accuracy")
    print(f"{'representation':58s} {'d':>5s} {'accuracy':>9s} {'vs raw':>7s} {'1 image':>9s} {'all':>8s}")
    print(f"{'baseline: raw 64 pixels':58s} {64:5d} {raw_mean:9.3f} {0.0:+7.3f}")
    for name, rep in REPRESENTATIONS.items():
        features = represent(images, rep)
        mean, _ = accuracy(features, digits.target)
        one = per_call(lambda: represent(images[:1], rep))
        batch = per_call(lambda: represent(images, rep), repeat=3)
        print(f"{name:58s} {features.shape[1]:5d} {mean:9.3f} {mean - raw_mean:+7.3f} {one * 1e3:7.2f}ms {batch:7.2f}s")
    decoded = np.stack([decode_image(_png(image), 32) for image in images])
    for name in ("pixels gray 16", "pixels 16 + hog 16", "summary + pixels 16 + hog 16 + hist"):
        mean, _ = accuracy(represent(decoded, REPRESENTATIONS[name]), digits.target)
        print(f"{'PNG → decode_image(32) → ' + name:58s} {'':5s} {mean:9.3f} {mean - raw_mean:+7.3f}")


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


if __name__ == "__main__":
    main()
