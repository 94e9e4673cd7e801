"""A real text table: the opening paragraphs of SciPy's own docstrings, labelled by subpackage.

Shipped inside an installed package (never downloaded). Three classes, ints or names.
"""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd

from ray_mlops.data.schema import FeatureSchema

SUBPACKAGES = ("linalg", "signal", "stats")


def _documents(name: str, limit: int) -> list[str]:
    module = __import__(f"scipy.{name}", fromlist=["_"])
    found = []
    for attr in sorted(a for a in dir(module) if not a.startswith("_")):
        doc = inspect.getdoc(getattr(module, attr)) or ""
        if len(doc) > 200 and doc not in found:
            found.append(doc)
    return ["\n\n".join(doc.split("\n\n")[:2]) for doc in found[:limit]]


def docstring_table(per_class: int = 100, *, words: bool = True, seed: int = 0) -> tuple[pd.DataFrame, FeatureSchema]:
    """One row per docstring: text ``doc__text``, a numeric and a categorical feature, the label."""
    rows = [(doc, label) for label in SUBPACKAGES for doc in _documents(label, per_class)]
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "id": [f"d{i:04d}" for i in range(len(rows))],
        "doc__text": [doc for doc, _ in rows],
        "lines": [float(doc.count("\n") + 1) for doc, _ in rows],
        "shelf": rng.choice(["a", "b", None], len(rows)),
        "module": [label if words else SUBPACKAGES.index(label) for _, label in rows],
    })
    frame.loc[::17, "doc__text"] = ""  # an entity without text
    schema = FeatureSchema("id", "module", "classification",
                           {"doc__text": "text", "lines": "numeric", "shelf": "categorical"})
    return frame, schema
