"""Image representations a model can learn from: stateless, so batch and online agree exactly.

An :class:`ImageRepresentation` (part of an image source's config) picks any of

* ``summary``: the 5 per-image statistics (mean, std, dark_fraction, edge_density, redness),
  ``numeric`` features the drift monitor tests;
* ``pixels``: a resized pixel grid, grey or RGB;
* ``hog``: HOG descriptors (:func:`skimage.feature.hog`) of the grey image at a fixed size;
* ``color_histogram``: per-channel histograms, each normalised to sum to 1;
* ``embedding``: the output of a local ONNX model (:class:`OnnxEmbedder`), run in batch as a
  Ray Data actor pool (:func:`embed_dataset`), on a GPU when ``num_gpus`` > 0.

Everything but ``summary`` is of kind ``vector``. :func:`feature_kinds` names the columns from
config alone; :func:`represent` computes them, in that order, for a list of RGB images of any
sizes (floats in [0, 1]) or a stacked array. Images are processed in groups of equal shape, each
group with one matrix product per resize, so a row never depends on the other images of its
batch: a Ray Data batch and one online request give the same numbers.

>>> rep = ImageRepresentation(pixels=PixelGrid(size=2), summary=False)
>>> list(feature_kinds(rep))
['pixel_0_0', 'pixel_0_1', 'pixel_1_0', 'pixel_1_1']
>>> represent([np.ones((5, 7, 3))], rep).round(9).tolist()
[[1.0, 1.0, 1.0, 1.0]]
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ray_mlops.errors import ConfigError

FeatureKind = Literal["numeric", "vector"]
SUMMARY_FEATURES = ("mean", "std", "dark_fraction", "edge_density", "redness")
CHANNELS = ("r", "g", "b")
EMBED_PREFIX = "embed_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PixelGrid(_Strict):
    """A ``size``×``size`` resize of the image (bilinear, antialiased), grey (channel mean) or RGB."""

    size: int = Field(default=16, ge=1, le=256)
    mode: Literal["gray", "rgb"] = "gray"


class Hog(_Strict):
    """HOG descriptors of the grey image resized to ``size``×``size`` (L2-Hys block norm)."""

    size: int = Field(default=32, ge=2, le=512)
    orientations: int = Field(default=9, ge=1, le=36)
    pixels_per_cell: int = Field(default=8, ge=1)
    cells_per_block: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _fits(self) -> "Hog":
        if self.size // self.pixels_per_cell < self.cells_per_block:
            raise ValueError(
                f"hog: size {self.size} holds {self.size // self.pixels_per_cell} cells of "
                f"pixels_per_cell {self.pixels_per_cell}, fewer than cells_per_block {self.cells_per_block}"
            )
        return self

    @property
    def length(self) -> int:
        """The descriptor's length (what :func:`skimage.feature.hog` returns for this config)."""
        blocks = self.size // self.pixels_per_cell - self.cells_per_block + 1
        return blocks * blocks * self.cells_per_block**2 * self.orientations


class ColorHistogram(_Strict):
    """``bins`` equal-width bins over [0, 1] per RGB channel, each channel's counts summing to 1."""

    bins: int = Field(default=8, ge=1, le=256)


class Embedding(_Strict):
    """A local ONNX model applied to the image resized to ``input_size`` (nothing is downloaded).

    The model's input is float32, RGB, ``(pixel - mean) / std``, in ``layout``; its first
    output, flattened per image, is the embedding (``dim`` values; read from the model's
    declared output shape when omitted).
    """

    model: str
    input_size: int = Field(default=32, ge=1, le=1024)
    input_name: str | None = None
    layout: Literal["nchw", "nhwc"] = "nchw"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    dim: int | None = Field(default=None, ge=1)
    num_gpus: float = Field(default=0, ge=0)
    batch_size: int = Field(default=64, ge=1)
    concurrency: int = Field(default=1, ge=1)
    threads: int = Field(default=1, ge=0, description="onnxruntime intra-op threads per actor (0: its default)")

    @field_validator("model")
    @classmethod
    def _onnx_file(cls, value: str) -> str:
        if not value.endswith(".onnx"):
            raise ValueError(f"embedding.model {value!r} must be a local .onnx file")
        return value

    @field_validator("std")
    @classmethod
    def _positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError("embedding.std must be positive")
        return value


class ImageRepresentation(_Strict):
    """Which representations of an image become features (each part optional)."""

    summary: bool = True
    pixels: PixelGrid | None = None
    hog: Hog | None = None
    color_histogram: ColorHistogram | None = None
    embedding: Embedding | None = None


# -- names --------------------------------------------------------------------------
def feature_kinds(rep: ImageRepresentation, *, embedding: bool = True) -> dict[str, FeatureKind]:
    """The columns of :func:`represent` (no source prefix) and their kinds, from config alone.

    Order: summary, pixels, hog, color_histogram, embedding (left out when ``embedding`` is
    False: the columns :func:`represent` gives without an embedder).
    """
    kinds: dict[str, FeatureKind] = {name: "numeric" for name in SUMMARY_FEATURES} if rep.summary else {}
    names: list[str] = []
    if rep.pixels is not None:
        names += _pixel_names(rep.pixels)
    if rep.hog is not None:
        names += [f"hog_{i}" for i in range(rep.hog.length)]
    if rep.color_histogram is not None:
        names += [f"hist_{c}_{b}" for c in CHANNELS for b in range(rep.color_histogram.bins)]
    if embedding and rep.embedding is not None:
        names += embedding_names(rep.embedding)
    kinds.update((name, "vector") for name in names)
    return kinds


def _pixel_names(grid: PixelGrid) -> list[str]:
    cells = [f"pixel_{row}_{col}" for row in range(grid.size) for col in range(grid.size)]
    return cells if grid.mode == "gray" else [f"{cell}_{c}" for cell in cells for c in CHANNELS]


def embedding_names(settings: Embedding) -> list[str]:
    """The embedding's columns: ``embed_0`` … ``embed_{dim-1}``."""
    return [f"{EMBED_PREFIX}{i}" for i in range(embedding_dim(settings))]


def embedding_dim(settings: Embedding) -> int:
    """``settings.dim``, or the length of the model's first output per image (its declared shape)."""
    if settings.dim is not None:
        return settings.dim
    return _declared_dim(settings.model, _mtime(settings.model))


@lru_cache(maxsize=16)
def _declared_dim(path: str, mtime: int) -> int:
    shape = _load_session(path, ["CPUExecutionProvider"], threads=1).get_outputs()[0].shape[1:]
    if not shape or not all(isinstance(d, int) for d in shape):
        raise ConfigError(f"embedding.dim: the output shape {shape} of {path} is not fixed; set dim")
    return int(np.prod(shape))


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"embedding.model: cannot read {path}: {exc.strerror}") from exc


# -- the stateless representations ----------------------------------------------------
def represent(images: Sequence[np.ndarray] | np.ndarray, rep: ImageRepresentation, embedder: "OnnxEmbedder | None" = None) -> np.ndarray:
    """Features (N×d float64, columns as :func:`feature_kinds`) of RGB images in [0, 1] (H×W×3, any sizes).

    Without ``embedder`` the embedding columns are left out (``feature_kinds(rep, embedding=False)``):
    the batch path appends them with :func:`embed_dataset`; an online request passes the
    replica's :class:`OnnxEmbedder` to get every column at once.
    """
    if embedder is not None and embedder.settings != rep.embedding:
        raise ValueError("the embedder's settings are not this representation's embedding")
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[3] == 3 and min(images.shape[1:3]) >= 1 \
            and images.dtype == np.float64:
        out, stack = _group_features(images, rep), images  # one stack of equal-shape images already
    else:
        stack = as_images(images)
        out = np.empty((len(stack), _width(rep)))
        for rows, group in _groups(stack):
            out[rows] = _group_features(group, rep)
    if embedder is not None:
        out = np.concatenate([out, embedder.embed(stack)], axis=1)
    return out


def _width(rep: ImageRepresentation) -> int:
    """``len(feature_kinds(rep, embedding=False))``, without building the names."""
    width = len(SUMMARY_FEATURES) if rep.summary else 0
    if rep.pixels is not None:
        width += rep.pixels.size**2 * (1 if rep.pixels.mode == "gray" else 3)
    if rep.hog is not None:
        width += rep.hog.length
    if rep.color_histogram is not None:
        width += 3 * rep.color_histogram.bins
    return width


def as_images(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """Check and convert: a list of float64 H×W×3 arrays (ValueError naming the bad image)."""
    out = []
    for i, image in enumerate(images):
        array = np.asarray(image, dtype=np.float64)
        if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
            raise ValueError(f"image {i}: expected an RGB array of shape (H, W, 3), got {array.shape}")
        out.append(array)
    return out


def _groups(images: list[np.ndarray]) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """(row indices, stacked images) per distinct image shape."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    for rows in by_shape.values():
        yield np.asarray(rows), np.stack([images[i] for i in rows])


def _group_features(stack: np.ndarray, rep: ImageRepresentation) -> np.ndarray:
    """The stateless columns of a stack of equal-shape images (N×H×W×3)."""
    parts = [np.empty((len(stack), 0))]
    if rep.summary:
        parts.append(summary_matrix(stack))
    if rep.pixels is not None:
        parts.append(pixel_grid(stack, rep.pixels).reshape(len(stack), -1))
    if rep.hog is not None:
        parts.append(hog_matrix(stack, rep.hog))
    if rep.color_histogram is not None:
        parts.append(color_histograms(stack, rep.color_histogram.bins))
    return np.concatenate(parts, axis=1)


def _grey(stack: np.ndarray) -> np.ndarray:
    """``stack.mean(axis=3)`` of RGB images, bit for bit (numpy adds the 3 channels in order), 4x faster."""
    return (stack[..., 0] + stack[..., 1] + stack[..., 2]) / 3.0


def summary_matrix(stack: np.ndarray) -> np.ndarray:
    """Per image (N×H×W×3): brightness, contrast, dark-spot share, edge density, redness."""
    grey = _grey(stack)
    edges = np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2))
    dark = (grey < 0.4).mean(axis=(1, 2))
    redness = (stack[..., 0] - stack[..., 2]).mean(axis=(1, 2))
    return np.column_stack([grey.mean(axis=(1, 2)), grey.std(axis=(1, 2)), dark, edges, redness])


def pixel_grid(stack: np.ndarray, grid: PixelGrid) -> np.ndarray:
    """The resized grid: N×size×size (grey, the channel mean) or N×size×size×3 (RGB)."""
    if grid.mode == "gray":
        return resize(_grey(stack), grid.size)
    return resize(stack, grid.size)


def resize(stack: np.ndarray, size: int) -> np.ndarray:
    """Resize N×H×W or N×H×W×C to ``size``×``size``: Pillow's bilinear filter (antialiased when shrinking), in float64.

    Two matrix products per stack; each image's result depends on that image alone.
    """
    if stack.shape[1:3] == (size, size):
        return stack.copy()
    rows, cols = _weights(stack.shape[1], size), _weights(stack.shape[2], size)
    if stack.ndim == 3:
        return rows @ stack @ cols.T
    planes = np.ascontiguousarray(stack.transpose(0, 3, 1, 2))
    return np.ascontiguousarray((rows @ planes @ cols.T).transpose(0, 2, 3, 1))


@lru_cache(maxsize=64)
def _weights(n_in: int, n_out: int) -> np.ndarray:
    """The n_out×n_in matrix of a 1-D triangle-filter resize (Pillow's BILINEAR coefficients)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(n_out) + 0.5) * scale
    offsets = (np.arange(n_in)[None, :] + 0.5 - centers[:, None]) / support
    weights = np.clip(1.0 - np.abs(offsets), 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    return weights


def hog_matrix(stack: np.ndarray, hog: Hog) -> np.ndarray:
    """HOG descriptors (N×``hog.length``) of the grey images resized to ``hog.size``."""
    from skimage.feature import hog as skimage_hog

    grey = resize(_grey(stack), hog.size)
    cell, block = (hog.pixels_per_cell,) * 2, (hog.cells_per_block,) * 2
    rows = [skimage_hog(image, orientations=hog.orientations, pixels_per_cell=cell, cells_per_block=block, block_norm="L2-Hys") for image in grey]
    return np.asarray(rows, dtype=np.float64).reshape(len(stack), hog.length)


def color_histograms(stack: np.ndarray, bins: int) -> np.ndarray:
    """Per image, per channel (r, g, b): the share of its pixels in each of ``bins`` bins over [0, 1]."""
    n, height, width, channels = stack.shape
    index = np.clip((stack * bins).astype(np.int64), 0, bins - 1)
    index += (np.arange(n)[:, None, None, None] * channels + np.arange(channels)) * bins
    counts = np.bincount(index.ravel(), minlength=n * channels * bins)
    return counts.reshape(n, channels * bins) / float(height * width)


def decode_rgb(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes → H×W×3 float64 RGB in [0, 1] at the image's own size; ValueError if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"unreadable image: {exc}") from exc
    return np.asarray(rgb, dtype=np.float64) / 255.0


# -- the embedding ------------------------------------------------------------------
def _load_session(path: str, providers: list[str], threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for a missing or bad file
        raise ConfigError(f"embedding.model: cannot load {path}: {exc}") from exc


def providers_for(settings: Embedding) -> list[str]:
    """CUDA first when ``num_gpus`` > 0 and onnxruntime has it, else CPU only."""
    import onnxruntime as ort

    if settings.num_gpus > 0 and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEmbedder:
    """An ONNX image model: ``embed(images)`` online, or a Ray Data ``map_batches`` callable class.

    As a callable (see :func:`embed_dataset`) it takes a pandas batch whose ``image_column``
    holds encoded image bytes (turned into pixels by ``decode``) or H×W×3 RGB arrays in [0, 1],
    and returns the batch with the embedding columns (``embed_0`` …) appended and, if
    ``drop_image``, the image column dropped. Pass the ``decode`` the online path uses, so both
    embed the same pixels.
    """

    def __init__(
        self,
        settings: Embedding,
        image_column: str = "bytes",
        drop_image: bool = True,
        decode: Callable[[bytes], np.ndarray] = decode_rgb,
    ):
        self.settings, self.image_column, self.drop_image, self.decode = settings, image_column, drop_image, decode
        self.session = _load_session(settings.model, providers_for(settings), settings.threads)
        self.input_name = settings.input_name or self.session.get_inputs()[0].name
        self.names = embedding_names(settings)
        self._chunk = self._fixed_batch() or settings.batch_size

    def _fixed_batch(self) -> int | None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        if self.input_name not in inputs:
            raise ConfigError(f"embedding.input_name: {self.input_name!r} is not an input of {self.settings.model} ({sorted(inputs)})")
        first = inputs[self.input_name].shape[0] if inputs[self.input_name].shape else None
        return first if isinstance(first, int) else None

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on."""
        return list(self.session.get_providers())

    def embed(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Embeddings (N×dim float64) of RGB images in [0, 1] of any sizes."""
        batch = self.model_input(as_images(images))
        parts = [self._run(batch[i : i + self._chunk]) for i in range(0, len(batch), self._chunk)]
        return np.concatenate(parts) if parts else np.empty((0, len(self.names)))

    def model_input(self, images: list[np.ndarray]) -> np.ndarray:
        """The model's float32 input: resized to ``input_size``, normalised, in ``layout``."""
        size = self.settings.input_size
        resized = np.empty((len(images), size, size, 3))
        for rows, group in _groups(images):
            resized[rows] = resize(group, size)
        normalised = (resized - np.asarray(self.settings.mean)) / np.asarray(self.settings.std)
        if self.settings.layout == "nchw":
            normalised = normalised.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(normalised, dtype=np.float32)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        output = np.asarray(self.session.run(None, {self.input_name: batch})[0], dtype=np.float64).reshape(len(batch), -1)
        if output.shape[1] != len(self.names):
            raise ConfigError(f"embedding.dim: the model gives {output.shape[1]} values per image, not {len(self.names)}")
        return output

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        images = [self._image_of(value) for value in batch[self.image_column]]
        embedded = pd.DataFrame(self.embed(images), columns=self.names, index=batch.index)
        kept = batch.drop(columns=[self.image_column]) if self.drop_image else batch
        return pd.concat([kept, embedded], axis=1)


    def _image_of(self, value: Any) -> np.ndarray:
        """One cell of an image column: encoded bytes, or an RGB array."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self.decode(bytes(value))
        return np.asarray(value, dtype=np.float64)


def embed_dataset(
    dataset: Any,
    settings: Embedding,
    *,
    image_column: str = "bytes",
    drop_image: bool = True,
    decode: Callable[[bytes], np.ndarray] = decode_rgb,
) -> Any:
    """Append the embedding columns to a Ray Data dataset, on an actor pool of ``settings.concurrency``.

    Rows keep all their columns (the entity key, any features already computed); the
    ``image_column`` (encoded bytes, turned into pixels by ``decode``, or H×W×3 RGB arrays in
    [0, 1]) is dropped unless ``drop_image`` is False. Batches of ``settings.batch_size`` rows.
    Each actor asks for ``settings.num_gpus`` GPUs, and uses CUDA when onnxruntime has it, if
    the cluster has that many; on a cluster without, the pool runs on CPUs.
    """
    import ray.data

    gpus = {"num_gpus": settings.num_gpus} if 0 < settings.num_gpus <= _cluster_gpus() else {}
    return dataset.map_batches(
        OnnxEmbedder,
        fn_constructor_args=(settings,),
        fn_constructor_kwargs={"image_column": image_column, "drop_image": drop_image, "decode": decode},
        batch_size=settings.batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=settings.concurrency),
        udf_modifying_row_count=False,
        **gpus,
    )


def _cluster_gpus() -> float:
    """The GPUs of the connected Ray cluster (not connected yet: no limit, the config is trusted)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else float("inf")


__all__ = [
    "ImageRepresentation",
    "PixelGrid",
    "Hog",
    "ColorHistogram",
    "Embedding",
    "SUMMARY_FEATURES",
    "feature_kinds",
    "embedding_names",
    "embedding_dim",
    "represent",
    "as_images",
    "summary_matrix",
    "pixel_grid",
    "resize",
    "hog_matrix",
    "color_histograms",
    "decode_rgb",
    "providers_for",
    "OnnxEmbedder",
    "embed_dataset",
]
