"""The real-data exporters of ``scripts/bench/realdata.py`` write what they claim (files only, no Ray).

Each exported folder is read back with plain pandas / pyarrow / PIL / json and must give
back the original data exactly (the matrix, the pixels, the texts, the labels); the
example configs in ``configs/examples/`` must describe those files.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "bench"))

import realdata  # noqa: E402

from ray_mlops.config import load_config  # noqa: E402

CONFIGS = {"tabular": "breast-cancer.yaml", "images": "digits.yaml", "text": "scipy-docs.yaml"}


def _walk(value, path: list[str]):
    for part in path:
        value = value[part]
    return value


def test_tabular_files_reassemble_the_breast_cancer_matrix(tmp_path):
    out = realdata.export("tabular", tmp_path, limit=40, seed=3)
    table = pd.read_csv(tmp_path / "patients.csv").set_index("patient_id")
    events = [json.loads(line) for part in sorted((tmp_path / "exams").glob("*.jsonl"))
              for line in part.read_text(encoding="utf-8").splitlines()]
    assert len(list((tmp_path / "exams").glob("*.jsonl"))) == 2
    assert len(events) == 2 * len(out.keys)
    by_key: dict[str, dict[str, float]] = {}
    for event in events:
        assert isinstance(event["slides"], list) and event["lab"]["shift"] in ("day", "night")
        for m in realdata._MEASUREMENTS:
            path = realdata.exam_path(event["review"], m)
            by_key.setdefault(event["patient_id"], {})[f"{event['review']}_{m}"] = _walk(event, path.split("."))
    rebuilt = np.array([[table.loc[k, c] if c.startswith("mean_") else by_key[k][c] for c in realdata.tabular_columns()]
                        for k in out.keys])
    np.testing.assert_array_equal(rebuilt, out.inputs)
    labels = pd.read_parquet(tmp_path / "labels.parquet").set_index("patient_id")["diagnosis"]
    np.testing.assert_array_equal(labels.loc[out.keys].to_numpy(), out.labels)
    assert out.inputs.shape == (40, 30)


def test_image_files_hold_the_digit_scans(tmp_path):
    out = realdata.export("images", tmp_path, limit=30)
    labels = pd.read_csv(tmp_path / "labels.csv", dtype={"scan_id": str}).set_index("scan_id")["digit"]
    for key, pixels, label in zip(out.keys, out.inputs, out.labels):
        with Image.open(tmp_path / "images" / f"{key}.png") as image:
            assert image.mode == "L" and image.size == (8, 8)
            grey = np.asarray(image, dtype=float)
        np.testing.assert_allclose(grey.ravel() * 16 / 255, pixels, atol=16 / 255 / 2 + 1e-9)
        assert labels[key] == label
    assert len(list((tmp_path / "images").iterdir())) == 30


def test_text_files_hold_the_documents_paragraph_by_paragraph(tmp_path):
    out = realdata.export("text", tmp_path, limit=25)
    topics = pd.read_csv(tmp_path / "topics.csv").set_index("doc_id")["topic"]
    for key, text, topic in zip(out.keys, out.inputs, out.labels):
        files = sorted((tmp_path / "docs").glob(f"{key}_*.txt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        assert files, key
        assert "\n\n".join(f.read_text(encoding="utf-8").rstrip("\n") for f in files) == text
        assert topics[key] == topic and topic in realdata.TOPICS
        assert ">>>" not in text


def test_text_corpus_is_about_a_thousand_documents_in_every_topic():
    documents, topics = realdata.text_corpus()
    counts = pd.Series(topics).value_counts()
    assert len(documents) >= 1000
    assert set(counts.index) == set(realdata.TOPICS) and counts.min() >= 100
    words = [sum(len(p.split()) for p in doc) for doc in documents]
    assert min(words) >= realdata.MIN_WORDS and np.median(words) >= 50


def test_prose_drops_parameters_examples_and_maths():
    doc = """Do a thing.

    A longer account of the thing.

    Parameters
    ----------
    x : int
        The input.

    Notes
    -----
    The thing is done well.

    .. math::

        y = x^2

    Examples
    --------
    >>> thing(1)
    """
    assert realdata.prose_paragraphs(doc) == ["Do a thing.", "A longer account of the thing.", "The thing is done well."]


@pytest.mark.parametrize("dataset", sorted(CONFIGS))
def test_example_config_describes_the_exported_files(tmp_path, dataset):
    out = realdata.export(dataset, tmp_path, limit=20)
    config = load_config(REPO / "configs" / "examples" / CONFIGS[dataset], overrides={"data.root": str(tmp_path)})
    assert (config.data.entity_key, config.data.label) == (out.entity_key, out.label)
    for source in config.data.sources:
        path = Path(config.resolve_source_path(source))
        assert path.exists(), source.name
        if source.format in ("csv", "parquet"):
            frame = pd.read_csv(path) if source.format == "csv" else pd.read_parquet(path)
            assert set(source.columns) | {out.entity_key} == set(frame.columns), source.name
            for name, spec in source.columns.items():
                if spec.levels:
                    assert set(frame[name].astype(str)) <= set(spec.levels)
                if spec.min is not None:
                    assert frame[name].min() >= spec.min
                if spec.max is not None:
                    assert frame[name].max() <= spec.max
        elif path.is_dir() and source.format in ("text", "image"):
            keys = {re.match(source.filename_pattern, f.name).group("key") for f in path.iterdir()}
            assert keys == set(out.keys), source.name


def test_example_events_config_names_every_nested_measurement():
    config = load_config(REPO / "configs" / "examples" / "breast-cancer.yaml")
    exams = next(s for s in config.data.sources if s.format == "jsonl")
    expected = [realdata.exam_path(kind, m) for kind in ("error", "worst") for m in realdata._MEASUREMENTS]
    assert exams.numeric_fields == expected
    assert exams.list_fields == ["slides"]


def test_another_split_gives_other_keys_that_file_names_keep_whole(tmp_path):
    first = realdata.export("images", tmp_path / "a", limit=10)
    second = realdata.export("images", tmp_path / "b", limit=10, split=1)
    assert not set(first.keys) & set(second.keys)
    assert all(not re.search(r"_\d+$", key) for key in first.keys + second.keys)
    np.testing.assert_array_equal(first.inputs, second.inputs)
