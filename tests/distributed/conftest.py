"""The distributed tests' fixture: `cluster` (tests/distributed/cluster.py)."""

from tests.distributed.cluster import cluster

__all__ = ["cluster"]
