"""Typed configuration, loaded from YAML.

With no file, the built-in defaults (identical to ``configs/default.yaml``) describe the
sample predictive-maintenance dataset written by ``ray-mlops generate``. A user's own
data is described by a YAML of the same shape (see ``configs/tabular-example.yaml``).
Loading never has side effects; every validation problem becomes a :class:`ConfigError`
that names the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from ray_mlops.errors import ConfigError



class _Strict(BaseModel):
    """Base model that rejects unknown keys, so a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class ColumnSpec(_Strict):
    """Type and value checks for one column of a table source."""

    type: Literal["float", "int", "category", "bool"] = "float"
    min: float | None = None
    max: float | None = None
    required: bool = True
    levels: list[str] | None = None


class SourceSettings(_Strict):
    """What every source's config has; each source type (a plugin in ``ray_mlops.data.sources``)
    subclasses it with its own keys, and is picked by ``format``."""

    name: str
    path: str
    format: str

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.replace("_", "").isalnum():
            raise ValueError(f"source name {value!r} must be letters, digits and underscores")
        return value

    def column_spec(self, column: str) -> ColumnSpec | None:
        """The declared checks of ``column`` when this source provides it as a table column (else None)."""
        return None


def _source_settings(raw: Any, index: int) -> SourceSettings:
    """One ``data.sources`` entry validated by the config model of its ``format``'s plugin."""
    if isinstance(raw, SourceSettings):
        return raw
    from ray_mlops.data.sources import source_type  # plugins are found by name, at validation time

    if not isinstance(raw, dict):
        raise ValueError(f"{index}: expected a mapping with 'name', 'format' and 'path'")
    plugin = source_type(raw.get("format"))
    if plugin is None:
        from ray_mlops.data.sources import formats

        raise ValueError(f"{index}.format: unknown format {raw.get('format')!r}; known formats: {', '.join(formats())}")
    try:
        return plugin.Settings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in (index, *first["loc"]))
        raise ValueError(f"{where}: {first['msg']}") from None


class DataConfig(_Strict):
    """Where the sources are and how they join into one feature table."""

    root: str = "data"
    entity_key: str = "machine_id"
    label: str = "failed"
    task: Literal["classification", "regression"] = "classification"
    max_reject_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    reference_sample: int = Field(default=5000, ge=10)
    #: An ingest whose Ray Data execution makes no progress (no block produced or moved) for
    #: this long fails with a DataError, publishing nothing, rather than waiting on a stuck task.
    stall_timeout_s: float = Field(default=600.0, gt=0)
    sources: list[SerializeAsAny[SourceSettings]]

    @field_validator("sources", mode="before")
    @classmethod
    def _plugin_settings(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [_source_settings(raw, i) for i, raw in enumerate(value)]

    @model_validator(mode="after")
    def _label_in_one_table(self) -> "DataConfig":
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        owners = self.label_sources()
        if len(owners) != 1:
            raise ValueError(
                f"label column {self.label!r} must be declared in the columns of exactly one "
                f"csv/parquet source, found in {len(owners)}"
            )
        return self

    def label_sources(self) -> list[SourceSettings]:
        return [s for s in self.sources if s.column_spec(self.label) is not None]

    @property
    def label_source(self) -> SourceSettings:
        """The table source that holds the label: the spine of the join."""
        return self.label_sources()[0]

    @property
    def label_spec(self) -> ColumnSpec:
        """The label column's declared type and checks."""
        spec = self.label_source.column_spec(self.label)
        assert spec is not None  # guaranteed by validation
        return spec


class RayConfig(_Strict):
    address: str | None = None
    namespace: str = "ray_mlops"
    num_cpus: int | None = None


class SearchParam(_Strict):
    """One dimension of a search space, as data."""

    type: Literal["uniform", "loguniform", "randint", "choice", "fixed"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None
    value: Any = None

    @model_validator(mode="after")
    def _complete(self) -> "SearchParam":
        if self.type in ("uniform", "loguniform", "randint"):
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"{self.type} needs low < high, got low={self.low} high={self.high}")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError("loguniform needs low > 0")
        if self.type == "choice" and not self.values:
            raise ValueError("choice needs a non-empty 'values' list")
        return self


_IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"


class FamilyConfig(_Strict):
    """One model family: a built-in shortcut (named by its key) or any estimator by import path.

    ``search_space`` keys are constructor parameters of the estimator; a key containing
    ``__`` is a ``Pipeline.set_params`` path (``features__notes_word__tfidf__max_features``).
    ``params`` are fixed constructor parameters (sampled ones override them).
    ``trusted_types`` are the non-scikit-learn types the fitted model holds that the
    registry may load (the ``estimator`` class itself is trusted by naming it here).
    """

    enabled: bool = True
    estimator: str | None = None  # e.g. sklearn.svm.SVC, mypkg.models.MyClassifier; null: the built-in of this name
    params: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, SearchParam] = Field(default_factory=dict)
    trusted_types: list[str] = Field(default_factory=list)

    @field_validator("estimator")
    @classmethod
    def _estimator_path(cls, value: str | None) -> str | None:
        if value is not None and not re.match(_IMPORT_PATH, value):
            raise ValueError(f"estimator must be an import path module.Class (e.g. sklearn.svm.SVC), got {value!r}")
        return value

    @field_validator("trusted_types")
    @classmethod
    def _type_paths(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if not re.match(_IMPORT_PATH, t)]
        if bad:
            raise ValueError(f"trusted_types must be dotted type names module.Class, got {bad}")
        return value


class TextConfig(_Strict):
    """The learned TF-IDF steps of each ``text`` feature (defaults; a family may search them)."""

    word_ngrams: tuple[int, int] | None = (1, 2)  # word n-gram range; null: no word step
    char_ngrams: tuple[int, int] | None = (2, 5)  # char_wb n-gram range; null: no char step
    max_features: int | None = Field(default=20000, ge=1)  # per step; null: the whole vocabulary
    min_df: int | float = Field(default=2, gt=0)  # a term must occur in this many documents (a float: a share)
    sublinear_tf: bool = True
    svd_components: int = Field(default=100, ge=1)  # for estimators that need dense input: TruncatedSVD per step

    @model_validator(mode="after")
    def _ranges(self) -> "TextConfig":
        for name in ("word_ngrams", "char_ngrams"):
            low_high = getattr(self, name)
            if low_high is not None and not 1 <= low_high[0] <= low_high[1]:
                raise ValueError(f"{name} must be [low, high] with 1 <= low <= high, got {list(low_high)}")
        if self.word_ngrams is None and self.char_ngrams is None:
            raise ValueError("word_ngrams and char_ngrams cannot both be null")
        if isinstance(self.min_df, float) and self.min_df >= 1.0:
            raise ValueError(f"min_df as a share must be below 1.0, got {self.min_df}")
        return self


class TrainConfig(_Strict):
    families: dict[str, FamilyConfig] = Field(default_factory=dict)
    text: TextConfig = Field(default_factory=TextConfig)
    num_samples: int = Field(default=6, ge=1)
    max_concurrent_trials: int = Field(default=2, ge=1)
    metric: str = "roc_auc"
    mode: Literal["max", "min"] = "max"
    validation_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = 0
    max_failures: int = Field(default=2, ge=0)
    cpus_per_trial: float = Field(default=1.0, gt=0)


class GateConfig(_Strict):
    """The promotion gate: a paired test of the candidate against production on the same rows.

    ``require: non_inferior`` promotes when the candidate is significantly (level ``alpha``)
    no more than ``margin`` worse on ``metric``; ``superior`` when it is significantly better.
    The first model must be significantly better than the trivial baseline. ``tolerance`` is
    read as the old name of ``margin``; ``min_gain_over_baseline`` is refused by name.
    """

    metric: str = "roc_auc"
    mode: Literal["max", "min"] = "max"
    require: Literal["non_inferior", "superior"] = "non_inferior"
    margin: float = Field(default=0.02, ge=0.0, lt=1.0)  # non-inferiority margin, in units of the metric
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)  # one-sided level of the paired test
    seed: int = 0  # the paired bootstrap's (metrics without a closed-form paired test)

    @model_validator(mode="before")
    @classmethod
    def _old_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "min_gain_over_baseline" in data:
            raise ValueError("gate.min_gain_over_baseline was removed: the first model must now beat the baseline "
                             "significantly (a paired test at gate.alpha); delete the key")
        if "tolerance" in data:  # the old name wins over the default margin merged in beside it
            data = {**{k: v for k, v in data.items() if k != "tolerance"}, "margin": data["tolerance"]}
        return data


class ServeConfig(_Strict):
    """The inference service: HTTP, replicas, autoscaling, batching, limits, prediction log."""

    app_name: str = "ray_mlops"
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    proxy_location: Literal["HeadOnly", "EveryNode", "Disabled"] = "HeadOnly"  # where Serve's HTTP proxies run
    num_cpus: float = Field(default=0.5, gt=0)
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=2, ge=1)
    target_ongoing_requests: float = Field(default=16, gt=0)
    upscale_delay_s: float = Field(default=10.0, ge=0)
    downscale_delay_s: float = Field(default=60.0, ge=0)
    metrics_interval_s: float = Field(default=10.0, gt=0)
    look_back_period_s: float = Field(default=30.0, gt=0)
    max_ongoing_requests: int = Field(default=64, ge=1)
    health_check_period_s: float = Field(default=10.0, gt=0)  # how often Serve checks each replica
    health_check_timeout_s: float = Field(default=30.0, gt=0)  # an unanswered check marks it unhealthy
    max_batch_size: int = Field(default=64, ge=1)
    batch_wait_timeout_s: float = Field(default=0.001, ge=0)
    max_instances: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=8_000_000, ge=1024)
    token: str | None = None
    prediction_log: bool = True
    canary_fraction: float = Field(default=0.0, ge=0.0, le=1.0)  # share of requests (by request-id hash) answered
    # by the shadow version while one is loaded (0: none; the shadow is only logged)
    log_buffer_rows: int = Field(default=100_000, ge=1)
    log_flush_rows: int = Field(default=5_000, ge=1)
    log_flush_interval_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _replica_bounds(self) -> "ServeConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {self.route_prefix!r}")
        return self


class RetrainConfig(_Strict):
    """What the monitor does on confirmed drift: re-ingest, search, gate, promote, swap."""

    enabled: bool = True
    num_samples: int | None = Field(default=None, ge=1)  # Tune trials (default: train.num_samples)
    log_train_fraction: float = Field(default=0.5, ge=0.0, lt=1.0)  # labeled log rows added to training
    min_holdout_rows: int = Field(default=100, ge=10)  # fewer labeled post-drift rows: gate on validation
    require: Literal["non_inferior", "superior"] = "superior"  # the gate's requirement after drift (overrides gate.require)
    timeout_s: float = Field(default=1800.0, gt=0)


class ShadowConfig(_Strict):
    """Shadow evaluation: a retrained candidate that passed the offline gate predicts beside
    production on live traffic, and a paired test on the live labeled rows promotes or discards it."""

    enabled: bool = True  # false: a candidate that passes the offline gate is promoted at once
    windows: int = Field(default=5, ge=1)  # windows after which the online test runs (with >= min_labels pairs)...
    min_rows: int = Field(default=400, ge=10)  # ...or as soon as this many labeled pairs came back
    max_windows: int = Field(default=20, ge=1)  # still too few labels: the candidate is discarded
    metric: str = "accuracy"  # of the online paired test (accuracy: exact McNemar); regression: rmse
    require: Literal["non_inferior", "superior"] = "superior"
    margin: float = Field(default=0.0, ge=0.0, lt=1.0)  # for non_inferior
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)  # one-sided level of the online test

    @model_validator(mode="after")
    def _window_bounds(self) -> "ShadowConfig":
        if self.max_windows < self.windows:
            raise ValueError(f"max_windows ({self.max_windows}) must be at least windows ({self.windows})")
        return self


class MonitorConfig(_Strict):
    """The drift monitor: windows, tests, patience and cooldown, checkpoints, retraining."""

    window_size: int = Field(default=200, ge=10)
    window_max_s: float = Field(default=300.0, gt=0)  # a window closes after this long...
    min_window: int = Field(default=50, ge=5)  # ...if it holds at least this many rows
    alpha: float = Field(default=0.01, gt=0.0, lt=1.0)  # per window, over inputs, predictions, accuracy
    correction: Literal["bonferroni", "bh", "none"] = "bonferroni"
    patience: int = Field(default=2, ge=1)  # consecutive drifting windows that confirm drift
    cooldown: int = Field(default=3, ge=0)  # windows after an alarm that cannot raise another
    min_labels: int = Field(default=30, ge=1)  # labeled rows a window needs for the accuracy test
    probation_windows: int = Field(default=5, ge=0)  # windows a loop-promoted version may be rolled back in; 0: off
    poll_interval_s: float = Field(default=0.5, gt=0)
    checkpoint_interval_s: float = Field(default=1.0, gt=0)
    history: int = Field(default=500, ge=1)  # verdicts kept in the checkpoint
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)


class TrackingConfig(_Strict):
    """Optional experiment tracking in MLflow (the registry stays the source of truth)."""

    mlflow_uri: str | None = None  # e.g. http://mlflow.internal:5000; None: off
    timeout_s: float = Field(default=5.0, gt=0)  # per MLflow HTTP request
    retries: int = Field(default=0, ge=0)  # MLflow's own HTTP retries (its default, 7, waits minutes)


class Config(_Strict):
    """The whole configuration of a ray_mlops project."""

    project: str = "predictive-maintenance"
    model_name: str = "failure-classifier"
    storage: str = ".ray_mlops"
    ray: RayConfig = Field(default_factory=RayConfig)
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def without_secrets(self) -> "Config":
        """This config without the bearer token: what may leave the driver process.

        Serve replicas get the token's sha256 besides it (``serve/deploy.py``); the monitor
        and the retraining get nothing of it, as they never check a request.
        """
        return self.model_copy(update={"serve": self.serve.model_copy(update={"token": None})})

    def digest(self) -> str:
        """A stable sha256 of the configuration, the token left out (recorded as lineage with every model).

        So a version trained by the driver and one retrained by the monitor (which never
        gets the token) record the same hash for the same configuration.
        """
        canonical = json.dumps(self.without_secrets().model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def resolve_source_path(self, source: SourceSettings) -> str:
        """A source's path, relative to ``data.root`` unless absolute or a URI."""
        if "://" in source.path or Path(source.path).is_absolute():
            return source.path
        return str(Path(self.data.root) / source.path)


def _bundled_default() -> Path:
    return Path(__file__).with_name("default.yaml")


def _format_validation_error(origin: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "value_error" and where.endswith(".sources"):  # a plugin's own error names its entry
        return f"{origin}: {where}.{str(first['msg']).removeprefix('Value error, ')}"
    extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{origin}: {where}: {first['msg']}{extra}"


#: Sections a user's ``data:`` replaces as a whole (never merged with the sample's sources).
_REPLACED_WHOLE = {"data"}
#: Training defaults of a regression task that omits them (the built-in ones are for classification).
_REGRESSION_TRAIN = {
    "metric": "rmse",
    "mode": "min",
    "families": {
        "ridge": {"search_space": {"alpha": {"type": "loguniform", "low": 0.001, "high": 100.0}}},
        "hist_gradient_boosting": {"search_space": {
            "learning_rate": {"type": "loguniform", "low": 0.03, "high": 0.3},
            "max_leaf_nodes": {"type": "randint", "low": 8, "high": 48},
            "max_iter": {"type": "fixed", "value": 200}}},
        "random_forest": {"search_space": {
            "n_estimators": {"type": "randint", "low": 50, "high": 200},
            "max_depth": {"type": "choice", "values": [6, 10, None]}}},
    },
}


def _merge(base: Any, override: Any) -> Any:
    """``override`` on top of ``base``: mappings merge key by key, anything else is replaced."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if key in base else value
    return merged


def with_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """A user's mapping completed by the built-in defaults, section by section.

    Omitted sections (and omitted keys of a section) take the built-in values. ``data``
    is the user's own as a whole when given, and so is ``train.families``: a project
    that lists its families trains those only. A regression project that omits its
    training families and metric gets regression ones.

    >>> cfg = with_defaults({"train": {"num_samples": 2}})
    >>> cfg["train"]["num_samples"], sorted(cfg["train"]["families"])[0], cfg["serve"]["port"]
    (2, 'hist_gradient_boosting', 8000)
    """
    defaults = _read_yaml(_bundled_default())
    user_train = raw.get("train") or {}
    if isinstance(raw.get("data"), dict) and raw["data"].get("task") == "regression":
        defaults["train"] = {**defaults["train"], **{k: v for k, v in _REGRESSION_TRAIN.items() if k not in user_train}}
    merged = {}
    for key in defaults.keys() | raw.keys():
        if key not in raw:
            merged[key] = defaults[key]
        elif key in _REPLACED_WHOLE or key not in defaults:
            merged[key] = raw[key]
        else:
            merged[key] = _merge(defaults[key], raw[key])
    if isinstance(user_train, dict) and "families" in user_train and isinstance(merged.get("train"), dict):
        merged["train"]["families"] = user_train["families"]
    return merged


def config_from_dict(raw: dict[str, Any], origin: str = "<config>") -> Config:
    """Validate a mapping into a :class:`Config` (omitted sections take the defaults); errors name ``origin`` and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level")
    try:
        return Config.model_validate(with_defaults(raw))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(origin, exc)) from exc


def effective_config(config: Config) -> dict[str, Any]:
    """The config as plain data, defaults merged, with the bearer token masked (what ``ray-mlops config`` prints)."""
    document = config.model_dump(mode="json")
    if document["serve"].get("token"):
        document["serve"]["token"] = "***"
    return document


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return loaded or {}


def _apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``ray.address``) on a nested mapping."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load a config file (or the built-in defaults) and apply dotted-key overrides.

    >>> cfg = load_config(overrides={"storage": "/tmp/store"})
    >>> cfg.storage, cfg.data.entity_key
    ('/tmp/store', 'machine_id')
    """
    source = Path(path) if path is not None else _bundled_default()
    raw = _apply_overrides(_read_yaml(source), overrides or {})
    return config_from_dict(raw, origin=str(source))
