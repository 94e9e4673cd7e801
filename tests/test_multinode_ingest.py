"""Ingestion on a 2-node ray.cluster_utils.Cluster: work lands on both raylets, same table."""

from __future__ import annotations

import pytest
import ray

from ray_mlops.config import load_config
from ray_mlops.data.generate import GenerateSpec, generate
from ray_mlops.data.ingest import ingest
from ray_mlops.data.schema import read_feature_table
from ray_mlops.storage import Storage

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(300)]


def test_ingest_on_two_nodes_matches_single_process_featurization(two_node_cluster, tmp_path):
    root = tmp_path / "data"
    generate(root, GenerateSpec(entities=200, seed=4))
    config = load_config(overrides={"data.root": str(root), "storage": str(tmp_path / "store")})
    storage = Storage(config.storage)
    result = ingest(config, storage)
    table = read_feature_table(storage)
    assert result.rows == len(table) == 200
    assert all(c["quarantined"] == 0 for c in result.counts.values())
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
