"""robprune-deploy: robust pruning (S2AP, MRPF, ...) as deployable compression algorithms.

The public API::

    import nncf, robprune_deploy
    result = robprune_deploy.prune(model, "s2ap", nncf.Dataset(loader), ratio=0.9)
    deployable = result.strip()              # masks folded / channels physically removed
    print(result.statistics().layer_table())

Algorithms live in :data:`ALGORITHMS`, filled from the ``robprune_deploy.algorithms`` entry points.
"""

from robprune_deploy.algorithms import (
    ALGORITHMS,
    AlgorithmConfig,
    CompressionAlgorithm,
    CompressionStage,
    Granularity,
    PruningContext,
    PruningResult,
    PruningStatistics,
)
from robprune_deploy.api import DEFAULT_THREAT, prune
from robprune_deploy.attacks import RobustLoss, ThreatModel
from robprune_deploy.errors import (
    ArgumentError,
    CheckpointError,
    DatasetError,
    NumericalError,
    OnnxModelError,
    OutputError,
    ProviderError,
    PruningError,
    RecipeError,
    RobPruneError,
    ShapeError,
    TrackingError,
    UnknownNameError,
)
from robprune_deploy.evaluation import evaluate_onnx
from robprune_deploy.export import export_onnx

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "DEFAULT_THREAT",
    "AlgorithmConfig",
    "ArgumentError",
    "CheckpointError",
    "CompressionAlgorithm",
    "CompressionStage",
    "DatasetError",
    "Granularity",
    "NumericalError",
    "OnnxModelError",
    "OutputError",
    "ProviderError",
    "PruningContext",
    "PruningError",
    "PruningResult",
    "PruningStatistics",
    "RecipeError",
    "RobPruneError",
    "RobustLoss",
    "ShapeError",
    "ThreatModel",
    "TrackingError",
    "UnknownNameError",
    "evaluate_onnx",
    "export_onnx",
    "prune",
]
