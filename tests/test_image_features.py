"""Image representations: names from config, exact batch/online agreement, agreement with
scikit-image and Pillow, and the ONNX embedding (a tiny model built here; nothing downloaded)
online and as a Ray Data actor pool."""

from __future__ import annotations

import functools
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError
from skimage.feature import hog as skimage_hog

from ray_mlops.data.sources.image import decode_image
from ray_mlops.data.image_features import (
    SUMMARY_FEATURES,
    ColorHistogram,
    Embedding,
    Hog,
    ImageRepresentation,
    OnnxEmbedder,
    PixelGrid,
    color_histograms,
    decode_rgb,
    embed_dataset,
    embedding_dim,
    feature_kinds,
    providers_for,
    represent,
    resize,
    summary_matrix,
)
from ray_mlops.errors import ConfigError

EVERYTHING = ImageRepresentation(pixels=PixelGrid(size=16), hog=Hog(), color_histogram=ColorHistogram())


def _images(shapes, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((h, w, 3)) for h, w in shapes]


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


# -- names, shapes, determinism -----------------------------------------------------------
def test_feature_kinds_name_every_column_in_order():
    kinds = feature_kinds(EVERYTHING)
    names = list(kinds)
    assert names[:5] == list(SUMMARY_FEATURES) and {kinds[n] for n in SUMMARY_FEATURES} == {"numeric"}
    assert names[5] == "pixel_0_0" and names[5 + 255] == "pixel_15_15"
    assert names[261] == "hog_0" and names[261 + 323] == "hog_323"  # 3×3 blocks × 2×2 cells × 9 orientations
    assert names[-24:] == [f"hist_{c}_{b}" for c in "rgb" for b in range(8)]
    assert {kinds[n] for n in names[5:]} == {"vector"}
    assert feature_kinds(EVERYTHING) == kinds


def test_rgb_grid_names_and_no_summary():
    rep = ImageRepresentation(summary=False, pixels=PixelGrid(size=2, mode="rgb"))
    assert list(feature_kinds(rep)) == [f"pixel_{r}_{c}_{ch}" for r in range(2) for c in range(2) for ch in "rgb"]
    assert feature_kinds(ImageRepresentation(summary=False)) == {}
    assert represent(_images([(3, 3)]), ImageRepresentation(summary=False)).shape == (1, 0)


def test_represent_shape_and_determinism():
    images = _images([(20, 30), (32, 32), (20, 30), (7, 9)])
    first = represent(images, EVERYTHING)
    assert first.shape == (4, len(feature_kinds(EVERYTHING))) and first.dtype == np.float64
    assert np.array_equal(first, represent([image.copy() for image in images], EVERYTHING))
    assert np.isfinite(first).all()


@pytest.mark.parametrize(
    "rep",
    [
        ImageRepresentation(),
        ImageRepresentation(summary=False, pixels=PixelGrid(size=5, mode="rgb")),
        ImageRepresentation(hog=Hog(size=20, pixels_per_cell=5, cells_per_block=3, orientations=4)),
        ImageRepresentation(summary=False, color_histogram=ColorHistogram(bins=3)),
        EVERYTHING,
    ],
)
def test_represent_gives_the_named_columns(rep):
    assert represent(_images([(13, 17), (8, 8)]), rep).shape == (2, len(feature_kinds(rep)))


def test_a_row_is_the_same_in_any_batch():
    """Online (one image) and batch (mixed sizes, or one stacked array) agree exactly."""
    images = _images([(20, 30), (32, 32), (20, 30), (7, 9), (32, 32)], seed=1)
    batch = represent(images, EVERYTHING)
    for i, image in enumerate(images):
        assert np.array_equal(represent([image], EVERYTHING)[0], batch[i])
    same = _images([(24, 24)] * 6, seed=2)
    assert np.array_equal(represent(np.stack(same), EVERYTHING), represent(same, EVERYTHING))
    assert np.array_equal(represent(np.stack(same)[3:4], EVERYTHING), represent(same, EVERYTHING)[3:4])


def test_bad_images_are_named():
    with pytest.raises(ValueError, match=r"image 1: expected an RGB array of shape \(H, W, 3\)"):
        represent([np.zeros((4, 4, 3)), np.zeros((4, 4))], EVERYTHING)


def test_settings_reject_unknown_keys_and_impossible_configs():
    with pytest.raises(ValidationError, match="extra"):
        ImageRepresentation.model_validate({"pixles": {"size": 8}})
    with pytest.raises(ValidationError, match="fewer than cells_per_block"):
        Hog(size=8, pixels_per_cell=8, cells_per_block=2)
    with pytest.raises(ValidationError, match="must be a local .onnx file"):
        Embedding(model="resnet50")
    rep = ImageRepresentation.model_validate({"pixels": {"size": 8, "mode": "rgb"}, "color_histogram": {"bins": 4}, "summary": False})
    assert len(feature_kinds(rep)) == 8 * 8 * 3 + 12


# -- each representation ------------------------------------------------------------------
def _five_statistics(stack: np.ndarray) -> np.ndarray:
    """The 5 per-image statistics written out image by image: brightness, contrast, dark share, edges, redness."""
    rows = []
    for image in stack:
        grey = image.mean(axis=2)
        edges = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
        rows.append([grey.mean(), grey.std(), (grey < 0.4).mean(), edges, (image[..., 0] - image[..., 2]).mean()])
    return np.asarray(rows)


def test_summary_is_todays_five_statistics():
    stack = np.stack(_images([(32, 32)] * 5, seed=3))
    np.testing.assert_allclose(summary_matrix(stack), _five_statistics(stack), rtol=1e-12, atol=1e-15)
    rep = ImageRepresentation()
    assert list(feature_kinds(rep)) == ["mean", "std", "dark_fraction", "edge_density", "redness"]
    np.testing.assert_allclose(represent(stack, rep), _five_statistics(stack), rtol=1e-12, atol=1e-15)


def test_pixel_grid_of_a_known_image():
    """Left half black, right half white, 8×8 → 4×4: Pillow's bilinear weights give 0, 1/8, 7/8, 1."""
    image = np.zeros((8, 8, 3))
    image[:, 4:] = 1.0
    grid = represent([image], ImageRepresentation(summary=False, pixels=PixelGrid(size=4)))[0].reshape(4, 4)
    np.testing.assert_allclose(grid, np.tile([0.0, 0.125, 0.875, 1.0], (4, 1)), atol=1e-12)
    same = represent([image], ImageRepresentation(summary=False, pixels=PixelGrid(size=8)))[0]
    assert np.array_equal(same, image.mean(axis=2).ravel())


def test_rgb_grid_keeps_channels_in_order():
    image = np.zeros((6, 10, 3))
    image[..., 0], image[..., 1], image[..., 2] = 1.0, 0.25, 0.5
    row = represent([image], ImageRepresentation(summary=False, pixels=PixelGrid(size=3, mode="rgb")))[0]
    np.testing.assert_allclose(row, np.tile([1.0, 0.25, 0.5], 9), atol=1e-12)


@pytest.mark.parametrize("size", [4, 7, 16, 45])
def test_resize_agrees_with_pillow(size):
    grey = np.random.default_rng(size).random((20, 30))
    pillow = np.asarray(Image.fromarray(grey.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(resize(grey[None], size)[0], pillow, atol=1e-6)


@pytest.mark.parametrize(
    "hog",
    [Hog(), Hog(size=16, orientations=8, pixels_per_cell=4, cells_per_block=2), Hog(size=24, orientations=6, pixels_per_cell=6, cells_per_block=3)],
)
def test_hog_agrees_with_skimage(hog):
    images = _images([(hog.size, hog.size)] * 3, seed=4)
    ours = represent(images, ImageRepresentation(summary=False, hog=hog))
    for image, row in zip(images, ours):
        expected = skimage_hog(
            image.mean(axis=2),
            orientations=hog.orientations,
            pixels_per_cell=(hog.pixels_per_cell,) * 2,
            cells_per_block=(hog.cells_per_block,) * 2,
            block_norm="L2-Hys",
        )
        assert row.shape == expected.shape == (hog.length,)
        np.testing.assert_allclose(row, expected, atol=1e-12)


def test_hog_of_a_larger_image_is_hog_of_its_resized_grey():
    image = _images([(50, 40)], seed=5)[0]
    ours = represent([image], ImageRepresentation(summary=False, hog=Hog()))[0]
    grey = resize(image.mean(axis=2)[None], 32)[0]
    np.testing.assert_allclose(ours, skimage_hog(grey, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2)), atol=1e-12)


def test_color_histograms_are_shares_per_channel():
    images = _images([(9, 11)] * 4, seed=6)
    shares = color_histograms(np.stack(images), 5).reshape(4, 3, 5)
    np.testing.assert_allclose(shares.sum(axis=2), 1.0)
    expected = np.histogram(images[2][..., 1], bins=5, range=(0.0, 1.0))[0] / 99
    np.testing.assert_allclose(shares[2, 1], expected)
    edges = np.zeros((2, 2, 3))
    edges[0, 0] = 1.0  # 1.0 falls in the last bin, 0.0 in the first
    np.testing.assert_allclose(color_histograms(edges[None], 4)[0], [0.75, 0, 0, 0.25] * 3)


# -- the ONNX embedding ---------------------------------------------------------------
def _tiny_onnx(path, size: int, dim: int, batch: int | str = "n", seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Flatten → Gemm → Relu over an N×3×size×size input; returns its weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(3 * size * size, dim)).astype(np.float32)
    bias = rng.normal(size=dim).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "b"], ["linear"]),
            helper.make_node("Relu", ["linear"], ["embedding"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dim])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return weights, bias


def _numpy_embedding(images, size, weights, bias, mean=(0.0,) * 3, std=(1.0,) * 3) -> np.ndarray:
    pixels = np.concatenate([resize(image[None], size) for image in images])
    chw = ((pixels - np.asarray(mean)) / np.asarray(std)).transpose(0, 3, 1, 2).astype(np.float32)
    return np.maximum(chw.reshape(len(images), -1).astype(np.float64) @ weights.astype(np.float64) + bias, 0.0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    weights, bias = _tiny_onnx(path, size=8, dim=6)
    return str(path), weights, bias


def test_embeddings_equal_numpys_computation_of_the_model(tiny_model):
    path, weights, bias = tiny_model
    settings = Embedding(model=path, input_size=8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    embedder = OnnxEmbedder(settings)
    assert embedder.providers == ["CPUExecutionProvider"] and embedder.input_name == "pixels"
    images = _images([(8, 8), (20, 30), (5, 5)], seed=8)
    expected = _numpy_embedding(images, 8, weights, bias, settings.mean, settings.std)
    np.testing.assert_allclose(embedder.embed(images), expected, rtol=1e-4, atol=1e-4)
    assert (expected > 0).any() and (expected == 0).any()  # the Relu did something


def test_gpus_only_when_onnxruntime_has_cuda(tiny_model):
    import onnxruntime

    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert providers_for(Embedding(model=tiny_model[0])) == ["CPUExecutionProvider"]
    on_gpu = providers_for(Embedding(model=tiny_model[0], num_gpus=1))
    assert on_gpu == (["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"])


def test_embedding_columns_come_last_and_dim_is_read_from_the_model(tiny_model):
    path, _, _ = tiny_model
    settings = Embedding(model=path, input_size=8)
    assert embedding_dim(settings) == 6
    rep = ImageRepresentation(pixels=PixelGrid(size=4), embedding=settings)
    names = list(feature_kinds(rep))
    assert names[-6:] == [f"embed_{i}" for i in range(6)] and feature_kinds(rep)["embed_0"] == "vector"
    assert list(feature_kinds(rep, embedding=False)) == names[:-6]
    images = _images([(8, 8), (12, 12)], seed=9)
    embedder = OnnxEmbedder(settings)
    full = represent(images, rep, embedder=embedder)
    assert full.shape == (2, len(names))
    assert np.array_equal(full[:, :-6], represent(images, rep))
    assert np.array_equal(full[:, -6:], embedder.embed(images))
    with pytest.raises(ValueError, match="not this representation's embedding"):
        represent(images, ImageRepresentation(), embedder=embedder)


def test_a_model_with_a_fixed_batch_of_one_runs_image_by_image(tmp_path):
    path = tmp_path / "one.onnx"
    weights, bias = _tiny_onnx(path, size=4, dim=3, batch=1)
    images = _images([(4, 4)] * 5, seed=10)
    out = OnnxEmbedder(Embedding(model=str(path), input_size=4, batch_size=16)).embed(images)
    np.testing.assert_allclose(out, _numpy_embedding(images, 4, weights, bias), rtol=1e-4, atol=1e-4)


def test_bad_models_are_config_errors_naming_the_key(tmp_path, tiny_model):
    missing = Embedding(model=str(tmp_path / "missing.onnx"))
    with pytest.raises(ConfigError, match="embedding.model: cannot read"):
        feature_kinds(ImageRepresentation(embedding=missing))
    with pytest.raises(ConfigError, match="embedding.model: cannot load"):
        OnnxEmbedder(missing)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="embedding.model: cannot load"):
        OnnxEmbedder(Embedding(model=str(garbage)))
    path = tiny_model[0]
    with pytest.raises(ConfigError, match="embedding.input_name: 'image' is not an input"):
        OnnxEmbedder(Embedding(model=path, input_size=8, input_name="image"))
    with pytest.raises(ConfigError, match="embedding.dim: the model gives 6 values per image, not 5"):
        OnnxEmbedder(Embedding(model=path, input_size=8, dim=5)).embed(_images([(8, 8)]))


def test_the_callable_class_on_a_pandas_batch_of_bytes(tiny_model):
    path, _, _ = tiny_model
    images = [np.round(image * 255) / 255 for image in _images([(8, 8), (10, 6)], seed=11)]
    batch = pd.DataFrame({"id": ["a", "b"], "mean": [0.1, 0.2], "bytes": [_png(image) for image in images]})
    embedder = OnnxEmbedder(Embedding(model=path, input_size=8))
    out = embedder(batch)
    assert list(out.columns) == ["id", "mean", *[f"embed_{i}" for i in range(6)]]
    np.testing.assert_allclose(decode_rgb(batch["bytes"][1]), images[1], atol=1e-12)
    assert np.array_equal(out.filter(like="embed_").to_numpy(np.float64), embedder.embed(images))


@pytest.mark.slow  # a Ray Data actor pool (~11 s)
def test_embed_dataset_on_a_ray_data_actor_pool(ray_session, tiny_model):
    """Rows of key + image bytes → rows of key + embedding, the same numbers as online
    (both decode with the source's decoder; num_gpus on a cluster without GPUs runs on CPUs)."""
    import ray.data

    path, _, _ = tiny_model
    settings = Embedding(model=path, input_size=8, batch_size=2, concurrency=2, num_gpus=1)
    decode = functools.partial(decode_image, size=10)
    images = _images([(8, 8)] * 3 + [(12, 9)] * 4, seed=12)
    rows = pd.DataFrame({"id": [f"e{i}" for i in range(7)], "bytes": [_png(image) for image in images]})
    out = embed_dataset(ray.data.from_pandas([rows[:4], rows[4:]]), settings, decode=decode).to_pandas()
    out = out.sort_values("id").reset_index(drop=True)
    assert list(out.columns) == ["id", *[f"embed_{i}" for i in range(6)]]
    assert out["id"].tolist() == rows["id"].tolist()
    online = OnnxEmbedder(settings).embed([decode(data) for data in rows["bytes"]])
    np.testing.assert_allclose(out.filter(like="embed_").to_numpy(np.float64), online, rtol=1e-6, atol=1e-6)

    pixels = [decode(data) for data in rows["bytes"][:2]]
    arrays = ray.data.from_pandas(pd.DataFrame({"id": ["x", "y"], "pixels": pixels}))
    kept = embed_dataset(arrays, settings.model_copy(update={"concurrency": 1}), image_column="pixels", drop_image=False).to_pandas()
    assert list(kept.columns[:2]) == ["id", "pixels"]
    np.testing.assert_allclose(kept.sort_values("id").filter(like="embed_").to_numpy(np.float64), online[:2], rtol=1e-6, atol=1e-6)
