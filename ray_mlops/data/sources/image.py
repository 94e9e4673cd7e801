"""Images (``image``): a folder of PNG/JPEG files named after the entity.

Each image is decoded once to an RGB array of ``size``×``size`` and turned into a
fixed-length representation by stateless code (the same in a Ray Data task and in a
Serve replica); an entity with several images gets the mean of each component and its
image count.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import ray.data
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from ray_mlops.config import SourceSettings
from ray_mlops.data.grouped import Groups
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

SUMMARY = ["mean", "std", "dark_fraction", "edge_density", "redness"]


class ImageSettings(SourceSettings):
    """A folder of images named after the entity (``<key>.png`` or ``<key>_<n>.png``)."""

    format: Literal["image"]
    size: int = Field(default=32, ge=4, le=512)  # decoded to size × size RGB
    filename_pattern: str = DEFAULT_FILENAME_PATTERN


def decode_image(data: bytes, size: int) -> np.ndarray:
    """PNG/JPEG bytes → float RGB array in [0, 1] of ``size``×``size``; ValueError if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"unreadable image: {exc}") from exc
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float64) / 255.0


def summary_matrix(pixels: np.ndarray) -> np.ndarray:
    """Per image of a stack (N×size×size×3): brightness, contrast, dark-spot share, edge density, redness."""
    grey = pixels.mean(axis=3)
    edges = np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2))
    dark = (grey < 0.4).mean(axis=(1, 2))
    redness = (pixels[..., 0] - pixels[..., 2]).mean(axis=(1, 2))
    return np.column_stack([grey.mean(axis=(1, 2)), grey.std(axis=(1, 2)), dark, edges, redness])


class ImageSource(MultiRecordSource):
    """Per entity: its image count, then the mean of each per-image component."""

    formats: ClassVar[tuple[str, ...]] = ("image",)
    Settings = ImageSettings
    count_feature: ClassVar[str] = "n_images"

    def record_kinds(self) -> dict[str, FeatureKind]:
        """The per-image components (unprefixed) and their kinds."""
        return {name: "numeric" for name in SUMMARY}

    def features(self) -> dict[str, FeatureKind]:
        return {self.column("n_images"): "numeric", **{self.column(n): k for n, k in self.record_kinds().items()}}

    def represent(self, pixels: np.ndarray) -> np.ndarray:
        """Per-image components (N × len(record_kinds)) of a stack of decoded images."""
        return summary_matrix(pixels)

    def entity_columns(self, groups: Groups, per_image: np.ndarray) -> Columns:
        columns = {self.column("n_images"): groups.sizes.astype(np.float64)}
        means = groups.mean(per_image)
        columns.update({self.column(name): means[:, j] for j, name in enumerate(self.record_kinds())})
        return columns

    def _width(self) -> int:
        return len(self.record_kinds())

    def _represent_all(self, images: list[np.ndarray]) -> np.ndarray:
        return self.represent(np.stack(images)) if images else np.empty((0, self._width()))

    # -- batch ----------------------------------------------------------------------
    def read(self, listed: Any) -> ray.data.Dataset:
        return read_files(listed.fs, listed.paths)

    def records(self, batch: pd.DataFrame) -> Split:
        """Image files (``bytes`` + ``path``) → one row of components per image; unreadable and unnamed rejected."""
        images, keys, reasons, bad = [], [], [], []
        for path, data in zip(batch["path"], batch["bytes"]):
            entity = key_from_path(path, self.settings.filename_pattern)
            if entity is None:
                reasons.append("file name does not match filename_pattern")
                bad.append(path)
                continue
            try:
                images.append(decode_image(bytes(data), self.settings.size))
            except ValueError:
                reasons.append("unreadable image")
                bad.append(path)
                continue
            keys.append(entity)
        good = pd.DataFrame(self._represent_all(images), columns=list(self.record_kinds()))
        good.insert(0, self.key, pd.Series(keys, dtype=object))
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
            return decode_image(base64.b64decode(value.split(",", 1)[-1], validate=True), self.settings.size)
        except (binascii.Error, ValueError) as exc:
            raise Invalid("not a readable base64-encoded image") from exc

    def online(self, instances: list[dict]) -> Columns:
        images, rows = self.items(instances, self._pixels)
        per_image = self._represent_all(images)
        return self.per_instance(rows, len(instances), lambda groups: self.entity_columns(groups, per_image))

    def request_fields(self) -> dict[str, tuple]:
        return {self.name: many(Text, f"{self.name}: base64-encoded PNG/JPEG images")}


__all__ = ["ImageSource", "ImageSettings", "decode_image", "summary_matrix"]
