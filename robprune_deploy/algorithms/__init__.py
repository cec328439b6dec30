"""The algorithm registry and the plugin template (:mod:`robprune_deploy.algorithms.template`)."""

from robprune_deploy.algorithms.granularity import Granularity
from robprune_deploy.algorithms.result import (
    CompressionStage,
    LayerStatistics,
    PruningResult,
    PruningStatistics,
)
from robprune_deploy.algorithms.template import (
    AlgorithmConfig,
    CompressionAlgorithm,
    Decision,
    EpochCallback,
    PruningContext,
    SearchScope,
)
from robprune_deploy.registry import Registry

ENTRY_POINT_GROUP = "robprune_deploy.algorithms"
BUILT_IN_DISTRIBUTIONS = ("robprune-deploy", "robprune-s2ap", "robprune-mrpf")
"""The distributions whose entry points are the built-in algorithms (the core and the plugins under
``plugins/``, each released on its own): another one cannot take their names."""

ALGORITHMS: Registry[type[CompressionAlgorithm]] = Registry(
    "algorithm", entry_point_group=ENTRY_POINT_GROUP, home_distributions=BUILT_IN_DISTRIBUTIONS
)
"""Every registered algorithm class by name; filled from the entry-point group on first lookup."""

__all__ = [
    "ALGORITHMS",
    "BUILT_IN_DISTRIBUTIONS",
    "ENTRY_POINT_GROUP",
    "AlgorithmConfig",
    "CompressionAlgorithm",
    "CompressionStage",
    "Decision",
    "EpochCallback",
    "Granularity",
    "LayerStatistics",
    "PruningContext",
    "PruningResult",
    "PruningStatistics",
    "SearchScope",
]
