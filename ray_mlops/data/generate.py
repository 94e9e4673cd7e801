"""A synthetic predictive-maintenance dataset in every shape production teams meet.

Each machine has four hidden risk factors, one per unstructured or semi-structured
modality (wear → events, corrosion → inspection images, thermal stress → telemetry,
complaints → technician notes), plus structured attributes. Whether it failed depends on
all of them, so a model that sees every modality beats one that sees only the tables.

Drift controls simulate production change for the monitor:

- ``covariate``: inputs move (older machines, heavier load, hotter telemetry, more
  corrosion), the input → failure relationship stays;
- ``prior``: the failure rate rises while each class's inputs look the same;
- ``concept``: inputs look the same, the relationship changes (thermal stress stops
  mattering, pressure — previously irrelevant — starts to).

Deterministic for a given seed; ``start_id`` gives a later batch fresh machine ids.
``modalities`` picks which sources are written (the labels always are): a million
machines without images and notes is a few large files instead of 2.5M small ones, and
:func:`sample_config` gives the config that lists only the sources written.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from ray_mlops.errors import DataError

Drift = Literal["none", "covariate", "prior", "concept"]

MODELS = np.array(["A100", "B200", "C300", "D400"])
MODEL_RISK = np.array([0.0, 0.2, 0.5, 0.9])
LOAD_CLASSES = np.array(["low", "medium", "high"])
LOAD_RISK = np.array([0.0, 0.3, 0.8])
SITES = np.array([f"S{i:02d}" for i in range(1, 7)])
NEGATIVE_WORDS = ["leak", "noise", "overheating", "vibration", "worn", "crack"]
POSITIVE_WORDS = ["normal", "clean"]
FILLER_WORDS = (
    "checked unit panel bearing seal motor belt filter valve housing inspected replaced "
    "adjusted lubricated tightened cable sensor reading logged shift operator area pump"
).split()
TELEMETRY_HOURS = 48
ENTITIES_PER_FILE = 2000
#: What ``--modalities`` chooses from, and the source formats of each (the label table is always written).
MODALITY_FORMATS: dict[str, tuple[str, ...]] = {
    "table": ("csv", "parquet"),
    "events": ("jsonl",),
    "text": ("text",),
    "image": ("image",),
    "timeseries": ("timeseries",),
}
MODALITIES = tuple(MODALITY_FORMATS)


def parse_modalities(text: str) -> tuple[str, ...]:
    """``"table,events"`` → the modalities in canonical order; a :class:`DataError` naming an unknown one.

    >>> parse_modalities("timeseries, table")
    ('table', 'timeseries')
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODALITY_FORMATS]
    if unknown or not names:
        what = f"unknown modality {unknown[0]!r}" if unknown else "no modality given"
        raise DataError(f"--modalities: {what} (choose from {', '.join(MODALITIES)}, comma-separated)")
    return tuple(m for m in MODALITIES if m in names)


@dataclass(frozen=True)
class GenerateSpec:
    """What to generate: size, seed and the drift to simulate."""

    entities: int = 2000
    seed: int = 0
    drift: Drift = "none"
    intensity: float = 1.0
    start_id: int = 0
    modalities: tuple[str, ...] = MODALITIES

    def __post_init__(self) -> None:
        if self.entities < 1:
            raise DataError(f"--entities must be at least 1, got {self.entities}")
        if self.drift not in ("none", "covariate", "prior", "concept"):
            raise DataError(f"--drift must be none, covariate, prior or concept, got {self.drift!r}")
        if not 0.0 <= self.intensity <= 5.0:
            raise DataError(f"--intensity must be between 0 and 5, got {self.intensity}")
        if parse_modalities(",".join(self.modalities)) != tuple(self.modalities):
            raise DataError(f"--modalities must be distinct, in the order {', '.join(MODALITIES)}; got {self.modalities}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _latent(rng: np.random.Generator, n: int, spec: GenerateSpec) -> pd.DataFrame:
    """Per-machine attributes and hidden risk factors."""
    shift = spec.intensity if spec.drift == "covariate" else 0.0
    load_p = np.array([0.3, 0.45, 0.25]) + np.array([-0.15, -0.05, 0.2]) * min(shift, 1.0)
    frame = pd.DataFrame(
        {
            "model_idx": rng.choice(4, size=n, p=[0.35, 0.3, 0.2, 0.15]),
            "site": rng.choice(SITES, size=n),
            "age_years": np.clip(rng.gamma(2.0, 4.0 * (1 + 0.5 * shift), size=n), 0, 40).round(2),
            "load_idx": rng.choice(3, size=n, p=load_p / load_p.sum()),
            "rated_power_kw": rng.lognormal(np.log(200), 0.5, size=n).round(1),
            "firmware": rng.integers(1, 9, size=n),
            "wear": rng.normal(0, 1, size=n),
            "corrosion": rng.normal(0.5 * shift, 1, size=n),
            "thermal": rng.normal(shift, 1, size=n),
            "complaint": rng.normal(0, 1, size=n),
            "seal": rng.normal(0, 1, size=n),
        }
    )
    return frame


def _failure_logit(latent: pd.DataFrame, spec: GenerateSpec) -> np.ndarray:
    concept = spec.intensity if spec.drift == "concept" else 0.0
    structured = (
        0.7 * MODEL_RISK[latent["model_idx"]]
        + 0.06 * (latent["age_years"] - 8)
        + 0.7 * LOAD_RISK[latent["load_idx"]]
    )
    hidden = (
        1.0 * latent["wear"]
        + 1.0 * latent["corrosion"]
        + 1.1 * (1 - 1.5 * min(concept, 1.0)) * latent["thermal"]
        + 0.9 * latent["complaint"]
        + 1.5 * concept * latent["seal"]
    )
    return (-2.0 + structured + hidden).to_numpy()


def _prior_resample(rng: np.random.Generator, latent: pd.DataFrame, failed: np.ndarray, n: int, spec: GenerateSpec):
    """Pick ``n`` machines so the failure rate rises while P(inputs | class) stays."""
    base_rate = failed.mean()
    target = min(0.95, base_rate + (1 - base_rate) * 0.5 * min(spec.intensity, 1.5))
    positives = np.flatnonzero(failed == 1)
    negatives = np.flatnonzero(failed == 0)
    n_pos = min(len(positives), int(round(target * n)))
    chosen = np.concatenate(
        [rng.choice(positives, n_pos, replace=False), rng.choice(negatives, n - n_pos, replace=False)]
    )
    chosen.sort()
    return latent.iloc[chosen].reset_index(drop=True), failed[chosen]


def _machines(rng: np.random.Generator, spec: GenerateSpec) -> tuple[pd.DataFrame, np.ndarray]:
    pool = spec.entities * 4 if spec.drift == "prior" else spec.entities
    latent = _latent(rng, pool, spec)
    failed = (rng.random(pool) < _sigmoid(_failure_logit(latent, spec))).astype(int)
    if spec.drift == "prior":
        latent, failed = _prior_resample(rng, latent, failed, spec.entities, spec)
    latent.insert(0, "machine_id", [f"M{spec.start_id + i:07d}" for i in range(spec.entities)])
    return latent, failed


def _write_labels(out: Path, latent: pd.DataFrame, failed: np.ndarray) -> None:
    pd.DataFrame({"machine_id": latent["machine_id"], "failed": failed}).to_csv(out / "labels.csv", index=False)


def _write_tables(out: Path, latent: pd.DataFrame) -> None:
    machines = pd.DataFrame(
        {
            "machine_id": latent["machine_id"],
            "model": MODELS[latent["model_idx"]],
            "site": latent["site"],
            "age_years": latent["age_years"],
        }
    )
    machines.to_csv(out / "machines.csv", index=False)
    specs = pd.DataFrame(
        {
            "machine_id": latent["machine_id"],
            "load_class": LOAD_CLASSES[latent["load_idx"]],
            "rated_power_kw": latent["rated_power_kw"],
            "firmware": latent["firmware"].astype("int64"),
        }
    )
    pq.write_table(pa.Table.from_pandas(specs, preserve_index=False), out / "specs.parquet")


def _event(rng: np.random.Generator, machine_id: str, wear: float, hour: int) -> dict:
    is_error = rng.random() < _sigmoid(wear - 0.3)
    kind = "error" if is_error else str(rng.choice(["maintenance", "inspection"]))
    record: dict = {
        "machine_id": machine_id,
        "ts": f"2026-01-{1 + hour // 24:02d}T{hour % 24:02d}:00:00Z",
        "event": {"type": kind, "code": f"E{rng.integers(10, 60)}" if is_error else None},
        "parts": [
            {"name": str(rng.choice(["bearing", "seal", "belt", "filter"])), "cost": round(float(rng.gamma(2, 40 + 20 * max(wear, 0))), 2)}
            for _ in range(rng.poisson(0.6 + 0.4 * max(wear, 0)))
        ],
    }
    record["event"]["severity"] = int(np.clip(round(2 + 0.9 * wear + rng.normal(0, 0.7)), 1, 5))
    if rng.random() < 0.7:
        record["downtime_min"] = round(float(rng.lognormal(3 + 0.4 * wear, 0.5)), 1)
    if rng.random() < 0.8:
        record["technician"] = {"id": f"T{rng.integers(1, 40):03d}", "shift": str(rng.choice(["day", "night"]))}
    return record


def _write_events(out: Path, rng: np.random.Generator, latent: pd.DataFrame) -> None:
    folder = out / "events"
    folder.mkdir(exist_ok=True)
    counts = rng.poisson(1.5 + 2.0 * _sigmoid(latent["wear"].to_numpy()))
    for start in range(0, len(latent), ENTITIES_PER_FILE):
        lines = []
        for i in range(start, min(start + ENTITIES_PER_FILE, len(latent))):
            machine_id, wear = latent.at[i, "machine_id"], latent.at[i, "wear"]
            hours = np.sort(rng.integers(0, 24 * 28, size=counts[i]))
            lines.extend(json.dumps(_event(rng, machine_id, wear, int(h))) for h in hours)
        (folder / f"part-{start // ENTITIES_PER_FILE:05d}.jsonl").write_text("\n".join(lines) + "\n" if lines else "")


def _note(rng: np.random.Generator, complaint: float) -> str:
    words = list(rng.choice(FILLER_WORDS, size=rng.integers(8, 20)))
    words += list(rng.choice(NEGATIVE_WORDS, size=rng.poisson(np.exp(0.9 * complaint - 0.4))))
    words += list(rng.choice(POSITIVE_WORDS, size=rng.poisson(np.exp(-0.9 * complaint - 0.4))))
    rng.shuffle(words)
    return " ".join(words).capitalize() + "."


def _write_notes(out: Path, rng: np.random.Generator, latent: pd.DataFrame) -> None:
    folder = out / "notes"
    folder.mkdir(exist_ok=True)
    for machine_id, complaint in zip(latent["machine_id"], latent["complaint"]):
        for k in range(1 + int(rng.random() < 0.3)):
            (folder / f"{machine_id}_{k}.txt").write_text(_note(rng, complaint), encoding="utf-8")


def inspection_image(rng: np.random.Generator, corrosion: float, size: int = 32) -> bytes:
    """One PNG inspection photo: grey metal with rust spots that grow with corrosion."""
    pixels = np.clip(rng.normal(0.62, 0.05, size=(size, size, 3)), 0, 1)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(rng.poisson(np.exp(0.8 * corrosion))):
        cy, cx, radius = rng.integers(0, size), rng.integers(0, size), rng.uniform(1, 3.5)
        spot = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        pixels[spot] = np.array([0.45, 0.22, 0.1]) + rng.normal(0, 0.03, size=3)
    buffer = io.BytesIO()
    Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _write_images(out: Path, rng: np.random.Generator, latent: pd.DataFrame) -> None:
    folder = out / "images"
    folder.mkdir(exist_ok=True)
    for machine_id, corrosion in zip(latent["machine_id"], latent["corrosion"]):
        for k in range(1 + int(rng.random() < 0.25)):
            (folder / f"{machine_id}_{k}.png").write_bytes(inspection_image(rng, corrosion))


def telemetry_frame(rng: np.random.Generator, latent: pd.DataFrame, hours: int = TELEMETRY_HOURS) -> pd.DataFrame:
    """Hourly readings per machine: thermal stress heats and shakes, seal wear drops pressure."""
    n = len(latent)
    t = np.arange(hours, dtype=float)
    thermal = latent["thermal"].to_numpy()[:, None]
    load = LOAD_RISK[latent["load_idx"]][:, None]
    temperature = 60 + 4 * load + (0.05 + 0.08 * thermal) * t + rng.normal(0, 1.0, (n, hours))
    vibration = 2 + 0.4 * thermal + rng.normal(0, 0.3, (n, hours)) * (1 + 0.3 * np.abs(thermal))
    pressure = 100 - 2.5 * latent["seal"].to_numpy()[:, None] + rng.normal(0, 1.5, (n, hours))
    rotation = 1500 + 50 * load + rng.normal(0, 20, (n, hours))
    start = np.datetime64("2026-02-01T00:00:00")
    return pd.DataFrame(
        {
            "machine_id": np.repeat(latent["machine_id"].to_numpy(), hours),
            "timestamp": np.tile(start + t.astype("timedelta64[h]"), n),
            "temperature": temperature.ravel().round(3),
            "vibration": vibration.ravel().round(4),
            "pressure": pressure.ravel().round(3),
            "rotation": rotation.ravel().round(1),
        }
    )


def _write_telemetry(out: Path, rng: np.random.Generator, latent: pd.DataFrame) -> None:
    folder = out / "telemetry"
    folder.mkdir(exist_ok=True)
    for start in range(0, len(latent), ENTITIES_PER_FILE):
        chunk = latent.iloc[start : start + ENTITIES_PER_FILE]
        table = pa.Table.from_pandas(telemetry_frame(rng, chunk), preserve_index=False)
        pq.write_table(table, folder / f"part-{start // ENTITIES_PER_FILE:05d}.parquet")


def _clear_generated(out: Path) -> None:
    """Remove the folders a previous ``generate`` wrote, so no stale files survive."""
    for name in ("events", "notes", "images", "telemetry"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in ("machines.csv", "specs.parquet"):
        (out / name).unlink(missing_ok=True)


def _writers(out: Path, seed: int) -> dict[str, Any]:
    """Per modality: write its files for ``latent`` (each with its own seeded stream)."""
    return {
        "table": lambda latent: _write_tables(out, latent),
        "events": lambda latent: _write_events(out, np.random.default_rng([seed, 1]), latent),
        "text": lambda latent: _write_notes(out, np.random.default_rng([seed, 2]), latent),
        "image": lambda latent: _write_images(out, np.random.default_rng([seed, 3]), latent),
        "timeseries": lambda latent: _write_telemetry(out, np.random.default_rng([seed, 4]), latent),
    }


def _counts(out: Path, latent: pd.DataFrame, failed: np.ndarray, modalities: tuple[str, ...]) -> dict[str, int]:
    counts = {"machines": len(latent), "failure_rate_pct": int(round(100 * failed.mean()))}
    if "text" in modalities:
        counts["notes"] = len(list((out / "notes").glob("*.txt")))
    if "image" in modalities:
        counts["images"] = len(list((out / "images").glob("*.png")))
    if "timeseries" in modalities:
        counts["telemetry_rows"] = len(latent) * TELEMETRY_HOURS
    return counts


def generate(out: str | Path, spec: GenerateSpec = GenerateSpec()) -> dict[str, int]:
    """Write the sample dataset's chosen modalities (and the labels) under ``out``; returns how many files/rows of each kind.

    Each modality draws from its own seeded stream, so a modality's files are the same
    whichever others are written.

    >>> import tempfile
    >>> counts = generate(tempfile.mkdtemp(), GenerateSpec(entities=5, seed=1))
    >>> counts["machines"], counts["telemetry_rows"]
    (5, 240)
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output folder {out}: {exc.strerror}") from exc
    _clear_generated(out)
    rng = np.random.default_rng(spec.seed)
    latent, failed = _machines(rng, spec)
    _write_labels(out, latent, failed)
    writers = _writers(out, spec.seed)
    for modality in spec.modalities:
        writers[modality](latent)
    return _counts(out, latent, failed, spec.modalities)


def sample_config(base: dict[str, Any], root: str | Path, modalities: tuple[str, ...]) -> dict[str, Any]:
    """A config document for data generated under ``root``: ``base``'s sources of the chosen modalities and the labels.

    ``base`` is a raw config document (a YAML file's mapping); without ``data.sources``
    the built-in sample sources are used.

    >>> doc = sample_config({}, "/data", ("timeseries",))
    >>> [s["name"] for s in doc["data"]["sources"]], doc["data"]["root"]
    (['labels', 'telemetry'], '/data')
    """
    document = dict(base)
    data = dict(document.get("data") or {})
    if "sources" not in data:
        bundled = yaml.safe_load(Path(__file__).parents[1].joinpath("default.yaml").read_text(encoding="utf-8"))
        data["sources"] = bundled["data"]["sources"]
    label = data.get("label", "failed")
    formats = {f for m in modalities for f in MODALITY_FORMATS[m]}
    data["sources"] = [s for s in data["sources"] if label in (s.get("columns") or {}) or s.get("format") in formats]
    data["root"] = str(root)
    document["data"] = data
    return document


__all__ = ["MODALITIES", "Drift", "GenerateSpec", "generate", "inspection_image", "parse_modalities", "sample_config", "telemetry_frame"]
