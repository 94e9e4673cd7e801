"""Online featurization: raw request records → feature rows, with the batch code.

A raw record carries every modality of the configured sources: the columns of the table
sources (except the label) at the top level, and for each multi-record source a field
named after it (a list of nested JSON events, of documents, of base64 images, of readings
oldest first). Each source type featurizes its part with the arithmetic its batch record
and entity steps run in Ray Data (:mod:`ray_mlops.data.sources`), so a record featurized
here equals its row in the feature table. A bad record raises :class:`RecordError` naming
the field (``instances[2].age_years: not a number``).
"""

from __future__ import annotations

import pandas as pd

from ray_mlops.config import Config
from ray_mlops.data.schema import FeatureRows, FeatureSchema, feature_rows, feature_schema
from ray_mlops.data.sources import RecordError, sources_of
from ray_mlops.data.sources.base import Columns, field_path


def featurize_instances(config: Config, instances: list[dict], schema: FeatureSchema | None = None) -> pd.DataFrame:
    """Raw records → one feature row each, in the feature table's column order.

    >>> from ray_mlops.config import load_config
    >>> rows = featurize_instances(load_config(), [{"model": "A100", "site": "S01", "age_years": 3,
    ...     "load_class": "low", "rated_power_kw": 150, "firmware": 2, "notes": "worn belt, leak"}])
    >>> rows.loc[0, "notes__kw_leak"], rows.loc[0, "age_years"], rows.loc[0, "notes__text"]
    (np.float64(1.0), np.float64(3.0), 'worn belt, leak')
    """
    return featurize_rows(config, instances, schema).frame()


def featurize_rows(config: Config, instances: list[dict], schema: FeatureSchema | None = None) -> FeatureRows:
    """:func:`featurize_instances` as :class:`~ray_mlops.data.schema.FeatureRows` (numpy, no frame): what a replica predicts from."""
    schema = schema or feature_schema(config)
    for i, record in enumerate(instances):
        if not isinstance(record, dict):
            raise RecordError(field_path(i), "expected a JSON object")
    columns: Columns = {}
    for source in sources_of(config):
        columns.update(source.online(instances))
    return feature_rows(columns, len(instances), schema)


__all__ = ["featurize_instances", "featurize_rows", "RecordError"]
