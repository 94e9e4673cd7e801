"""Real public datasets, written as a user's files arrive: split across formats, one folder each.

Everything here ships inside installed packages (nothing is downloaded):

* ``tabular`` — scikit-learn's breast cancer data (569 patients, 30 measurements, 2 classes),
  split three ways: ``patients.csv`` (the 10 "mean" measurements), ``exams/*.jsonl`` (the 20
  "error" and "worst" measurements nested in objects, two review events per patient in
  shuffled order, with a list and a categorical field) and ``labels.parquet`` (the diagnosis).
* ``images`` — scikit-learn's handwritten digits (1,797 real 8×8 scans, 10 classes) as
  ``images/<id>.png`` (grayscale) + ``labels.csv``.
* ``text`` — the documentation of SciPy's and NumPy's public functions: each function's
  prose (summary, extended summary and Notes; no parameter lists, code or maths), one text
  file per paragraph ``docs/<id>_<n>.txt``, labelled by the subject of the subpackage it
  belongs to (statistics, signal processing, linear algebra, special functions, numerical
  methods) in ``topics.csv``. ~1,270 documents whose topic a reader can tell from the prose.

Each exporter returns an :class:`Exported`: the folder, the entity keys and, aligned with
them, the original representation (the feature matrix, the pixel matrix, the texts) and the
labels, which is what the plain scikit-learn baselines train on.

    python scripts/bench/realdata.py tabular data/breast_cancer   # write one dataset's files
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: How each text topic is made: the public functions of these modules.
TOPICS: dict[str, tuple[str, ...]] = {
    "statistics": ("scipy.stats", "numpy.random"),
    "signal_processing": ("scipy.signal", "scipy.ndimage", "scipy.fft", "numpy.fft"),
    "linear_algebra": ("scipy.linalg", "numpy.linalg", "scipy.sparse.linalg", "scipy.sparse.csgraph"),
    "special_functions": ("scipy.special",),
    "numerical_methods": ("scipy.optimize", "scipy.interpolate", "scipy.integrate"),
}
MIN_WORDS = 20  # a docstring with less prose than this is not a document
_SECTION = re.compile(r"^([A-Z][A-Za-z ]+)\n-{3,}\s*$", re.M)
_MEASUREMENTS = ("radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
                 "concave_points", "symmetry", "fractal_dimension")
#: Where each breast-cancer measurement lives in an exam event: (group, name) under "error"/"worst".
_NESTED = {"radius": "size", "perimeter": "size", "area": "size", "texture": "surface",
           "smoothness": "surface", "compactness": "shape", "concavity": "shape",
           "concave_points": "shape", "symmetry": "shape", "fractal_dimension": "shape"}
DATASETS = ("tabular", "images", "text")


@dataclass(frozen=True)
class Exported:
    """One exported dataset: where its files are, and the original data they came from.

    ``inputs`` (a float matrix, or a list of texts) and ``labels`` are aligned with ``keys``.
    """

    name: str
    root: Path
    entity_key: str
    label: str
    keys: list[str]
    inputs: Any
    labels: np.ndarray
    files: int


def _keys(prefix: str, n: int, split: int = 0) -> list[str]:
    """Entity keys; another ``split`` gives other keys, so ray_mlops' hash split puts other rows in validation."""
    # no "_<digits>" suffix: the default filename pattern strips it as a document number
    tag = f"{prefix}{split}x" if split else prefix
    return [f"{tag}{i:05d}" for i in range(n)]


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


# -- tabular ------------------------------------------------------------------------
def tabular_columns() -> list[str]:
    """The 30 breast-cancer columns, in scikit-learn's order, as ``mean_radius``, ``error_area``…"""
    return [f"{kind}_{m}" for kind in ("mean", "error", "worst") for m in _MEASUREMENTS]


def exam_path(kind: str, measurement: str) -> str:
    """The dotted JSON path of an ``error``/``worst`` measurement: ``worst.size.radius``."""
    return f"{kind}.{_NESTED[measurement]}.{measurement}"


def _exam_events(key: str, row: pd.Series, rng: np.random.Generator) -> list[dict]:
    events = []
    for kind in ("error", "worst"):
        nested: dict[str, dict[str, float]] = {}
        for m in _MEASUREMENTS:
            nested.setdefault(_NESTED[m], {})[m] = float(row[f"{kind}_{m}"])
        slides = [f"s{int(s)}" for s in rng.integers(0, 10_000, size=int(rng.integers(1, 4)))]
        events.append({"patient_id": key, "review": kind, kind: nested, "slides": slides,
                       "lab": {"shift": str(rng.choice(["day", "night"]))}})
    return events


def export_tabular(root: Path, *, limit: int | None = None, seed: int = 0, split: int = 0) -> Exported:
    """Breast cancer over ``patients.csv`` + ``exams/part-{0,1}.jsonl`` + ``labels.parquet``."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    rows = _subset(len(data.target), limit, seed)
    X, y = data.data[rows], data.target[rows].astype(int)
    keys, frame = _keys("p", len(rows), split), pd.DataFrame(X, columns=tabular_columns())
    root.mkdir(parents=True, exist_ok=True)
    mean_columns = [c for c in frame.columns if c.startswith("mean_")]
    frame[mean_columns].assign(patient_id=keys)[["patient_id", *mean_columns]].to_csv(root / "patients.csv", index=False)
    pd.DataFrame({"patient_id": keys, "diagnosis": y}).to_parquet(root / "labels.parquet", index=False)
    rng = np.random.default_rng(seed)
    events = [e for key, (_, row) in zip(keys, frame.iterrows()) for e in _exam_events(key, row, rng)]
    order = rng.permutation(len(events))
    (root / "exams").mkdir(exist_ok=True)
    for part, chunk in enumerate(np.array_split(order, 2)):
        lines = (json.dumps(events[i]) for i in chunk)
        (root / "exams" / f"part-{part}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Exported("tabular", root, "patient_id", "diagnosis", keys, X, y, files=4)


# -- images -------------------------------------------------------------------------
def digit_png(pixels: np.ndarray) -> bytes:
    """An 8×8 digit (values 0..16) as a grayscale PNG (0..255)."""
    from PIL import Image

    grey = np.rint(pixels.reshape(8, 8) * 255.0 / 16.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def export_images(root: Path, *, limit: int | None = None, seed: int = 0, split: int = 0) -> Exported:
    """The digits as ``images/<scan_id>.png`` + ``labels.csv`` (``scan_id``, ``digit``)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rows = _subset(len(data.target), limit, seed)
    X, y = data.data[rows], data.target[rows].astype(int)
    keys = _keys("scan", len(rows), split)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for key, pixels in zip(keys, X):
        (root / "images" / f"{key}.png").write_bytes(digit_png(pixels))
    pd.DataFrame({"scan_id": keys, "digit": y}).to_csv(root / "labels.csv", index=False)
    return Exported("images", root, "scan_id", "digit", keys, X, y, files=len(keys) + 1)


# -- text ---------------------------------------------------------------------------
def prose_paragraphs(doc: str) -> list[str]:
    """The prose of a numpydoc docstring: summary, extended summary and Notes, one paragraph each.

    Parameter lists, examples, references, code and maths blocks (indented) are left out.

    >>> prose_paragraphs("Add two numbers.\\n\\nParameters\\n----------\\nx : int\\n\\nNotes\\n-----\\nIt adds.\\n\\n    x + y\\n")
    ['Add two numbers.', 'It adds.']
    """
    parts = _SECTION.split(inspect.cleandoc(doc))
    kept = [parts[0]] + [parts[i + 1] for i in range(1, len(parts) - 1, 2) if parts[i].strip() == "Notes"]
    paragraphs = []
    for block in kept:
        for paragraph in re.split(r"\n\s*\n", block.strip("\n")):
            if not paragraph.strip() or paragraph[:1].isspace() or paragraph.lstrip().startswith((">>>", "..")):
                continue
            paragraphs.append(" ".join(paragraph.split()))
    return paragraphs


def _public_docs(module_name: str) -> list[list[str]]:
    import importlib

    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    documents = []
    for name in sorted(names):
        obj = getattr(module, name, None)
        doc = getattr(obj, "__doc__", None)
        if obj is None or inspect.ismodule(obj) or not isinstance(doc, str):
            continue
        paragraphs = prose_paragraphs(doc)
        if sum(len(p.split()) for p in paragraphs) >= MIN_WORDS:
            documents.append(paragraphs)
    return documents


def text_corpus() -> tuple[list[list[str]], list[str]]:
    """Every topic's documents (each a list of paragraphs) and their topics; exact duplicates dropped."""
    if sys.flags.optimize >= 2:
        raise RuntimeError("docstrings are stripped (python -OO); run without -OO")
    documents, topics, seen = [], [], set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for topic, modules in TOPICS.items():
            for module in modules:
                for paragraphs in _public_docs(module):
                    text = "\n\n".join(paragraphs)
                    if text not in seen:
                        seen.add(text)
                        documents.append(paragraphs)
                        topics.append(topic)
    return documents, topics


def export_text(root: Path, *, limit: int | None = None, seed: int = 0, split: int = 0) -> Exported:
    """The documentation corpus as ``docs/<doc_id>_<n>.txt`` (one per paragraph) + ``topics.csv``."""
    documents, topics = text_corpus()
    rows = _subset(len(documents), limit, seed)
    keys = _keys("doc", len(rows), split)
    (root / "docs").mkdir(parents=True, exist_ok=True)
    files = 0
    for key, row in zip(keys, rows):
        for n, paragraph in enumerate(documents[row], start=1):
            (root / "docs" / f"{key}_{n}.txt").write_text(paragraph + "\n", encoding="utf-8")
            files += 1
    labels = np.asarray([topics[r] for r in rows], dtype=object)
    pd.DataFrame({"doc_id": keys, "topic": labels}).to_csv(root / "topics.csv", index=False)
    texts = ["\n\n".join(documents[r]) for r in rows]
    return Exported("text", root, "doc_id", "topic", keys, texts, labels, files=files + 1)


EXPORTERS = {"tabular": export_tabular, "images": export_images, "text": export_text}


def export(name: str, root: Path, *, limit: int | None = None, seed: int = 0, split: int = 0) -> Exported:
    """Write dataset ``name`` (one of :data:`DATASETS`) under ``root`` (``split``: see :func:`_keys`)."""
    if name not in EXPORTERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    return EXPORTERS[name](Path(root), limit=limit, seed=seed, split=split)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("root", type=Path, help="folder to write (the config's data.root)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many entities")
    args = parser.parse_args(argv)
    out = export(args.dataset, args.root, limit=args.limit)
    print(f"{out.name}: {len(out.keys)} entities, {out.files} files in {out.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
