"""FedKSeed members on the learning tests' demo model (fixtures shared, not rebuilt)."""

from tests.learning.conftest import demo_model_dir, demo_shard_dir
from tests.learning.fedkseed.conftest import demo_base_sha256, make_kseed

__all__ = ["demo_base_sha256", "demo_model_dir", "demo_shard_dir", "make_kseed"]
