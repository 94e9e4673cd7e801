"""Free text (``text``): a folder of UTF-8 files named after the entity.

Each entity's documents become two things: its raw text (the documents joined in file-name
order, a ``text`` feature that a learned vectorizer inside the model's Pipeline turns into
numbers) and cheap stateless statistics the drift monitor can test (document, word and
character counts, the share of common English words, keyword hits, hashed word buckets).
"""

from __future__ import annotations

import functools
import re
import zlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
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
    MultiRecordSource,
    Split,
    empty_rejects,
    entity_groups,
    expect,
    key_from_path,
    matrix,
)

if TYPE_CHECKING:
    import ray.data  # imported where a Dataset is built: reading a config needs no Ray Data


@functools.cache
def _stop_words() -> frozenset[str]:
    """scikit-learn's English stop words (imported once, when a text is first counted)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


_WORD = re.compile(r"[a-z0-9]+")
JOIN = "\n"
TEXT = "text"
PATH = "_path"


class TextSettings(SourceSettings):
    """A folder of UTF-8 text files named after the entity (``<key>.txt`` or ``<key>_<n>.txt``)."""

    format: Literal["text"]
    raw_text: bool = True             # carry the raw text for a learned vectorizer in the model
    max_chars: int = Field(default=200_000, ge=1)  # of an entity's joined text
    keywords: list[str] = Field(default_factory=list)
    hash_features: int = Field(default=8, ge=0, le=256)
    filename_pattern: str = DEFAULT_FILENAME_PATTERN


class TextSource(MultiRecordSource):
    """Per entity: summed per-document counts, the share of common words, and (``raw_text``) the text itself."""

    formats: ClassVar[tuple[str, ...]] = ("text",)
    Settings = TextSettings
    count_feature: ClassVar[str] = "n_notes"

    def count_columns(self) -> list[str]:
        s = self.settings
        return ["n_notes", "n_words", "n_chars", *[f"kw_{w}" for w in s.keywords], *[f"hash_{i}" for i in range(s.hash_features)]]

    def features(self) -> dict[str, FeatureKind]:
        kinds: dict[str, FeatureKind] = {self.column(name): "numeric" for name in [*self.count_columns(), "stopword_share"]}
        if self.settings.raw_text:
            kinds[self.column(TEXT)] = "text"
        return kinds

    # -- arithmetic (shared by batch and online) ------------------------------------
    def _counts(self, text: str) -> list[float]:
        """Additive counts of one document (as :meth:`count_columns`), then its common-word count."""
        s = self.settings
        words = _WORD.findall(text.lower())
        hashed = [0.0] * s.hash_features
        for word in words if s.hash_features else ():
            hashed[zlib.crc32(word.encode()) % s.hash_features] += 1.0
        stop = _stop_words()
        common = sum(word in stop for word in words)
        return [1.0, float(len(words)), float(len(text)), *(float(words.count(k)) for k in s.keywords), *hashed, float(common)]

    def count_matrix(self, texts: list[str]) -> np.ndarray:
        return matrix([self._counts(text) for text in texts], len(self.count_columns()) + 1)

    def entity_columns(self, groups: Groups, counts: np.ndarray, texts: list[str]) -> Columns:
        """``texts`` in each entity's document order (the groups' record order)."""
        summed = groups.sum(counts)
        columns = {self.column(name): summed[:, j] for j, name in enumerate(self.count_columns())}
        with np.errstate(invalid="ignore", divide="ignore"):
            share = summed[:, -1] / summed[:, 1]
        columns[self.column("stopword_share")] = np.where(summed[:, 1] > 0, share, np.nan)
        if self.settings.raw_text:
            columns[self.column(TEXT)] = self._joined(groups, texts)
        return columns

    def _joined(self, groups: Groups, texts: list[str]) -> np.ndarray:
        ordered = [texts[i] for i in groups.order]
        joined = [JOIN.join(ordered[start : start + size])[: self.settings.max_chars]
                  for start, size in zip(groups.starts, groups.sizes)]
        return np.array(joined, dtype=object)

    # -- batch ----------------------------------------------------------------------
    def read(self, listed: Any) -> ray.data.Dataset:
        return read_files(listed.fs, listed.paths)

    def records(self, batch: pd.DataFrame) -> Split:
        """Text files (``bytes`` + ``path``) → one row per document; non-UTF-8 and unnamed files rejected."""
        texts, keys, paths, reasons, bad = [], [], [], [], []
        for path, data in zip(batch["path"], batch["bytes"]):
            entity = key_from_path(path, self.settings.filename_pattern)
            try:
                text = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                reasons.append("not UTF-8 text")
                bad.append(path)
                continue
            if entity is None:
                reasons.append("file name does not match filename_pattern")
                bad.append(path)
                continue
            texts.append(text)
            keys.append(entity)
            paths.append(path)
        good = pd.DataFrame(self.count_matrix(texts), columns=[*self.count_columns(), "n_common"])
        good.insert(0, self.key, pd.Series(keys, dtype=object))
        good[PATH] = pd.Series(paths, dtype=object)
        if self.settings.raw_text:
            good[TEXT] = pd.Series(texts, dtype=object)
        return good, reject_frame(self.name, reasons, bad)

    def entities(self, records: pd.DataFrame) -> Split:
        keys, groups = entity_groups(records[self.key], then=records[PATH])
        counts = records[[*self.count_columns(), "n_common"]].to_numpy(np.float64)
        texts = records[TEXT].tolist() if self.settings.raw_text else []
        return self.entity_frame(keys, self.entity_columns(groups, counts, texts)), empty_rejects()

    # -- online ---------------------------------------------------------------------
    def online(self, instances: list[dict]) -> Columns:
        texts, rows = self.items(instances, expect(str, "expected a string"))
        counts = self.count_matrix(texts)
        return self.per_instance(rows, len(instances), lambda groups: self.entity_columns(groups, counts, texts))

    def request_fields(self) -> dict[str, tuple]:
        return {self.name: many(Text, f"{self.name}: free-text documents of this entity")}


__all__ = ["TextSource", "TextSettings"]
