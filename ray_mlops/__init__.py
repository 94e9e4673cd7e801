"""ray_mlops: a closed MLOps loop on Ray.

Heterogeneous ingestion (Ray Data) → parallel training (Ray Tune) → a registry with
lineage and a promotion gate → serving (Ray Serve) → drift monitoring and retraining.
"""

from ray_mlops.config import Config, load_config
from ray_mlops.errors import RayMlopsError

__version__ = "0.1.0"

__all__ = ["Config", "load_config", "RayMlopsError", "__version__"]
