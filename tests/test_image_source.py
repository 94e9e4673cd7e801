"""The image source type end to end: real scans as PNG files, every representation, the ONNX
embedding on a Ray Data actor pool, and online featurization that equals the table row."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from test_image_features import _tiny_onnx

from ray_mlops.config import load_config
from ray_mlops.data.sources import sources_of

pytestmark = pytest.mark.slow  # every image representation through a real ingest; test_image_features covers them without Ray

N = 60


def _png(pixels: np.ndarray) -> bytes:
    sink = io.BytesIO()
    Image.fromarray((pixels / 16.0 * 255).astype(np.uint8), mode="L").save(sink, format="PNG")
    return sink.getvalue()


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """``N`` real handwritten-digit scans (scikit-learn's digits) as PNG files, a label CSV, a tiny ONNX model."""
    root = tmp_path_factory.mktemp("scans")
    digits = load_digits()
    (root / "images").mkdir()
    ids = [f"d{i:03d}" for i in range(N)]
    for entity, image in zip(ids, digits.images[:N]):
        (root / "images" / f"{entity}.png").write_bytes(_png(image))
    (root / "images" / "d999.png").write_bytes(b"not a png")
    pd.DataFrame({"scan": ids, "digit": digits.target[:N]}).to_csv(root / "labels.csv", index=False)
    _tiny_onnx(root / "embed.onnx", size=8, dim=4)
    return root


def _config(root, tmp_path, representation: dict | None):
    document = {"storage": str(tmp_path / "store"), "data": {
        "root": str(root), "entity_key": "scan", "label": "digit", "max_reject_rate": 0.5,
        "sources": [{"name": "labels", "format": "csv", "path": "labels.csv", "columns": {"digit": {"type": "int", "min": 0}}},
                    {"name": "scans", "format": "image", "path": "images", "size": 16,
                     **({} if representation is None else {"representation": representation})}]}}
    path = tmp_path / "scans.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path)


def test_the_default_image_representation_is_learnable(scans, tmp_path):
    config = _config(scans, tmp_path, None)  # representation omitted
    kinds = sources_of(config)[1].features()
    assert sum(k == "vector" for k in kinds.values()) == 16 * 16 + 324  # pixel grid + HOG
    assert [n for n, k in kinds.items() if k == "numeric"][:2] == ["scans__n_images", "scans__mean"]


def test_every_representation_through_ingest_and_online(scans, tmp_path, ray_session):
    from ray_mlops.data.ingest import ingest
    from ray_mlops.data.online import featurize_instances
    from ray_mlops.data.schema import read_feature_table
    from ray_mlops.storage import Storage

    representation = {"summary": True, "pixels": {"size": 8, "mode": "gray"}, "hog": {"size": 16},
                      "color_histogram": {"bins": 4}, "embedding": {"model": str(scans / "embed.onnx"), "input_size": 8}}
    config = _config(scans, tmp_path, representation)
    result = ingest(config, Storage(config.storage))
    assert result.counts["scans"] == {"read": N + 1, "accepted": N, "quarantined": 1, "reasons": {"unreadable image": 1}}
    table = read_feature_table(Storage(config.storage)).set_index("scan")
    assert [c for c in result.schema.features if c.startswith("scans__embed_")] == [f"scans__embed_{i}" for i in range(4)]
    ids = ["d000", "d017", "d059"]
    instances = [{"scans": base64.b64encode((scans / "images" / f"{i}.png").read_bytes()).decode()} for i in ids]
    online = featurize_instances(config, instances)
    columns = [c for c in result.schema.features if c.startswith("scans__")]
    np.testing.assert_allclose(online[columns].to_numpy(), table.loc[ids, columns].to_numpy(), rtol=1e-6, atol=1e-6)
    assert np.abs(table[[c for c in columns if "embed_" in c]].to_numpy()).sum() > 0


def _encoded(pixels: np.ndarray, mode: str, **save) -> bytes:
    image = Image.fromarray(pixels).convert(mode)
    sink = io.BytesIO()
    image.save(sink, format="PNG", **save)
    return sink.getvalue()


def _pil_pixels(data: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        rgb = rgb if rgb.size == (size, size) else rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float64) / 255.0


@pytest.mark.parametrize("mode,save", [("RGB", {}), ("RGB", {"optimize": True}), ("RGB", {"compress_level": 0}),
                                       ("RGBA", {}), ("L", {}), ("P", {}), ("I;16", {})])
def test_decoding_gives_the_pixels_pil_gives_for_every_png_kind(mode, save):
    """The libspng fast path (8-bit RGB at the source's size) and the PIL path decode to the same floats."""
    from ray_mlops.data.sources.image import _png_rgb8, decode_image

    rng = np.random.default_rng(7)
    for size, shape in ((32, (32, 32, 3)), (32, (20, 28, 3)), (16, (16, 16, 3))):
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        pixels[: shape[0] // 2] = pixels[0]  # rows that compress (filters other than None)
        data = _encoded(pixels, mode, **save)
        decoded = decode_image(data, size)
        assert decoded.dtype == np.float64 and decoded.shape == (size, size, 3)
        np.testing.assert_array_equal(decoded, _pil_pixels(data, size))
        assert (_png_rgb8(data, size) is not None) == (mode == "RGB" and shape[:2] == (size, size))
    for broken in (b"not a png", _encoded(pixels, "RGB")[:60], b"\x89PNG\r\n\x1a\n" + b"\0" * 40):
        with pytest.raises(ValueError, match="unreadable image"):
            decode_image(broken, 16)
