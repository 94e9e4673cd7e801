"""Images (``image``): a folder of PNG/JPEG files named after the entity.

Each image is decoded once to an RGB array of ``size``×``size`` and turned into the
configured ``representation`` (:mod:`ray_mlops.data.image_features`: summary statistics,
a pixel grid, HOG, colour histograms, an ONNX embedding) by stateless code, the same in a
Ray Data task and in a Serve replica. An entity with several images gets the mean of each
component and its image count. The embedding runs in batch as a Ray Data actor pool
(``num_gpus`` when the cluster has GPUs) after the record step.
"""

from __future__ import annotations

import base64
import functools
import binascii
import io
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
import pyspng
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from ray_mlops.config import SourceSettings
from ray_mlops.data.grouped import Groups
from ray_mlops.data.image_features import Hog, ImageRepresentation, OnnxEmbedder, PixelGrid, embed_dataset, feature_kinds, represent
from ray_mlops.data.quarantine import reject_frame
from ray_mlops.data.sources._read import read_files
from ray_mlops.data.sources._request import Text, many
from ray_mlops.data.sources.base import (
    DEFAULT_FILENAME_PATTERN,
    Columns,
    FeatureKind,
    Invalid,
    MultiRecordSource,
    Split,
    empty_rejects,
    entity_groups,
    key_from_path,
)

if TYPE_CHECKING:
    import ray.data  # imported where a Dataset is built: reading a config needs no Ray Data


IMAGE = "_image"  # a record's encoded image, kept for the embedding stage only


def _learnable() -> ImageRepresentation:
    """The default: summary statistics (drift-tested), a 16×16 grey pixel grid and HOG (what a model learns from)."""
    return ImageRepresentation(summary=True, pixels=PixelGrid(size=16, mode="gray"), hog=Hog())


class ImageSettings(SourceSettings):
    """A folder of images named after the entity (``<key>.png`` or ``<key>_<n>.png``)."""

    format: Literal["image"]
    size: int = Field(default=32, ge=4, le=512)  # decoded to size × size RGB, then represented
    representation: ImageRepresentation = Field(default_factory=_learnable)
    filename_pattern: str = DEFAULT_FILENAME_PATTERN


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_rgb8(data: bytes, size: int) -> np.ndarray | None:
    """An 8-bit RGB PNG of ``size``×``size`` decoded by libspng (pyspng), else None (PIL decides).

    PNG is lossless, so these are the pixels PIL gives; libspng skips PIL's per-image
    Python work (about 0.1 ms of a 32×32 image's 0.13 ms).
    """
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if (width, height) != (size, size) or (data[24], data[25]) != (8, 2):  # bit depth 8, colour type RGB
        return None
    try:
        pixels = pyspng.load(data)
    except Exception:  # anything libspng refuses goes to PIL, which names the problem
        return None
    return pixels if pixels.shape == (size, size, 3) and pixels.dtype == np.uint8 else None


def decode_pixels(data: bytes, size: int) -> np.ndarray:
    """PNG/JPEG bytes → uint8 RGB array of ``size``×``size``; ValueError if unreadable."""
    fast = _png_rgb8(data, size)
    if fast is not None:
        return fast
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"unreadable image: {exc}") from exc
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def as_unit(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels (one image or a stack) as floats in [0, 1]: what every representation reads."""
    return pixels.astype(np.float64) / 255.0


def decode_image(data: bytes, size: int) -> np.ndarray:
    """PNG/JPEG bytes → float RGB array in [0, 1] of ``size``×``size``; ValueError if unreadable."""
    return as_unit(decode_pixels(data, size))


class ImageSource(MultiRecordSource):
    """Per entity: its image count, then the mean of each per-image component."""

    formats: ClassVar[tuple[str, ...]] = ("image",)
    Settings = ImageSettings
    count_feature: ClassVar[str] = "n_images"

    _embedder: OnnxEmbedder | None = None

    @property
    def representation(self) -> ImageRepresentation:
        return self.settings.representation

    def record_kinds(self) -> dict[str, FeatureKind]:
        """The per-image components (unprefixed) and their kinds, embedding included."""
        return self._record_kinds

    @functools.cached_property
    def _record_kinds(self) -> dict[str, FeatureKind]:
        return dict(feature_kinds(self.representation))

    @functools.cached_property
    def _record_columns(self) -> list[str]:
        return [self.column(name) for name in self._record_kinds]

    @functools.cached_property
    def _stateless_width(self) -> int:
        return len(feature_kinds(self.representation, embedding=False))

    def features(self) -> dict[str, FeatureKind]:
        return {self.column("n_images"): "numeric", **{self.column(n): k for n, k in self.record_kinds().items()}}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_embedder": None}  # a loaded ONNX session stays in its process

    def embedder(self) -> OnnxEmbedder | None:
        """The ONNX embedder of an online request, loaded once per source instance (None without an embedding)."""
        if self.representation.embedding is not None and self._embedder is None:
            self._embedder = OnnxEmbedder(self.representation.embedding)
        return self._embedder

    def entity_columns(self, groups: Groups, per_image: np.ndarray) -> Columns:
        columns = {self.column("n_images"): groups.sizes.astype(np.float64)}
        means = groups.mean(per_image)
        columns.update(zip(self._record_columns, means.T))
        return columns

    def _represent_all(self, images: list[np.ndarray], embedder: OnnxEmbedder | None) -> np.ndarray:
        """Per-image components of uint8 ``images``; without ``embedder`` the embedding columns are left out."""
        width = len(self._record_kinds) if embedder is not None else self._stateless_width
        return represent(as_unit(np.stack(images)), self.representation, embedder) if images else np.empty((0, width))

    # -- batch ----------------------------------------------------------------------
    def read(self, listed: Any) -> ray.data.Dataset:
        return read_files(listed.fs, listed.paths)

    def after_records(self, records: ray.data.Dataset) -> ray.data.Dataset:
        """The embedding of each accepted image, on an actor pool (when configured)."""
        if self.representation.embedding is None:
            return records
        decode = functools.partial(decode_image, size=self.settings.size)  # the pixels online requests embed
        return embed_dataset(records, self.representation.embedding, image_column=IMAGE, decode=decode)

    def records(self, batch: pd.DataFrame) -> Split:
        """Image files (``bytes`` + ``path``) → one row of components per image; unreadable and unnamed rejected."""
        images, keys, encoded, reasons, bad = [], [], [], [], []
        for path, data in zip(batch["path"], batch["bytes"]):
            entity = key_from_path(path, self.settings.filename_pattern)
            if entity is None:
                reasons.append("file name does not match filename_pattern")
                bad.append(path)
                continue
            try:
                images.append(decode_pixels(bytes(data), self.settings.size))
            except ValueError:
                reasons.append("unreadable image")
                bad.append(path)
                continue
            keys.append(entity)
            encoded.append(bytes(data))
        names = list(feature_kinds(self.representation, embedding=False))
        good = pd.DataFrame(self._represent_all(images, None), columns=names)
        good.insert(0, self.key, pd.Series(keys, dtype=object))
        if self.representation.embedding is not None:
            good[IMAGE] = pd.Series(encoded, dtype=object)
        return good, reject_frame(self.name, reasons, bad)

    def entities(self, records: pd.DataFrame) -> Split:
        keys, groups = entity_groups(records[self.key])
        per_image = records[list(self.record_kinds())].to_numpy(np.float64)
        return self.entity_frame(keys, self.entity_columns(groups, per_image)), empty_rejects()

    # -- online ---------------------------------------------------------------------
    def _pixels(self, value: Any) -> np.ndarray:
        if not isinstance(value, str):
            raise Invalid("expected a base64-encoded image string")
        try:
            return decode_pixels(base64.b64decode(value.split(",", 1)[-1], validate=True), self.settings.size)
        except (binascii.Error, ValueError) as exc:
            raise Invalid("not a readable base64-encoded image") from exc

    def online(self, instances: list[dict]) -> Columns:
        images, rows = self.items(instances, self._pixels)
        per_image = self._represent_all(images, self.embedder())
        return self.per_instance(rows, len(instances), lambda groups: self.entity_columns(groups, per_image))

    def request_fields(self) -> dict[str, tuple]:
        return {self.name: many(Text, f"{self.name}: base64-encoded PNG/JPEG images")}


__all__ = ["ImageSource", "ImageSettings", "as_unit", "decode_image", "decode_pixels"]
