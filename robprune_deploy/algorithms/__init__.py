"""The algorithm registry and the base classes plugins build on."""

from robprune_deploy.algorithms.base import (
    AlgorithmConfig,
    CompressionAlgorithm,
    EpochCallback,
    PruningContext,
)
from robprune_deploy.algorithms.granularity import Granularity
from robprune_deploy.algorithms.result import (
    CompressionStage,
    LayerStatistics,
    PruningResult,
    PruningStatistics,
)
from robprune_deploy.registry import Registry

ENTRY_POINT_GROUP = "robprune_deploy.algorithms"
BUILT_IN_DISTRIBUTION = "robprune-deploy"
"""The distribution whose entry points are the built-in algorithms: another one cannot take their names."""

ALGORITHMS: Registry[type[CompressionAlgorithm]] = Registry(
    "algorithm", entry_point_group=ENTRY_POINT_GROUP, home_distribution=BUILT_IN_DISTRIBUTION
)
"""Every registered algorithm class by name; filled from the entry-point group on first lookup."""

__all__ = [
    "ALGORITHMS",
    "ENTRY_POINT_GROUP",
    "AlgorithmConfig",
    "CompressionAlgorithm",
    "CompressionStage",
    "EpochCallback",
    "Granularity",
    "LayerStatistics",
    "PruningContext",
    "PruningResult",
    "PruningStatistics",
]
