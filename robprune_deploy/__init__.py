"""robprune-deploy: robust pruning (S2AP, MRPF, ...) as deployable compression algorithms.

The public API::

    import nncf, robprune_deploy as rp
    rp.adversarial_train(model, loader, threat, epochs=10)       # PGD-AT or TRADES, in place
    result = rp.prune(model, "s2ap", nncf.Dataset(loader), ratio=0.9, attack=threat)
    rp.adversarial_train(result.model, loader, threat, epochs=3)  # fine-tune with the masks frozen
    deployable = result.strip()              # masks folded / channels physically removed
    rp.export_onnx(deployable, "model.onnx", example_input)
    verdict = rp.gate_onnx("model.onnx", baseline="dense.onnx", recipe={"gate": {"min_pgd_acc": 0.3}})

Algorithms live in :data:`ALGORITHMS`, filled from the ``robprune_deploy.algorithms`` entry points.
A plugin subclasses :class:`CompressionAlgorithm` and implements its ``search`` (a :class:`SearchScope`
in, a :class:`Decision` out); what a search works with is exported here too: :func:`prunable_layers`,
:func:`ignored_layer_names`, :func:`apply_masks`, :func:`count_model`, :class:`ChannelGroups`.

Names are imported on first use (PEP 562), so ``import robprune_deploy`` and the ``robprune``
command's ``--help`` load neither torch nor onnxruntime nor MLflow; the error types are plain imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from robprune_deploy.algorithms import (
        ALGORITHMS,
        AlgorithmConfig,
        CompressionAlgorithm,
        CompressionStage,
        Decision,
        Granularity,
        PruningContext,
        PruningResult,
        PruningStatistics,
        SearchScope,
    )
    from robprune_deploy.api import DEFAULT_THREAT, adversarial_train, gate_onnx, prune
    from robprune_deploy.attacks import RobustLoss, ThreatModel
    from robprune_deploy.evaluation import evaluate_onnx
    from robprune_deploy.export import export_onnx
    from robprune_deploy.masking import apply_masks, masks_of
    from robprune_deploy.models import NormalizedClassifier
    from robprune_deploy.surgery import ChannelGroups, ModelCount, count_model, ignored_layer_names, prunable_layers

__version__ = "0.1.0"

_LAZY = {
    "robprune_deploy.algorithms": (
        "ALGORITHMS",
        "AlgorithmConfig",
        "CompressionAlgorithm",
        "CompressionStage",
        "Decision",
        "Granularity",
        "PruningContext",
        "PruningResult",
        "PruningStatistics",
        "SearchScope",
    ),
    "robprune_deploy.api": ("DEFAULT_THREAT", "adversarial_train", "gate_onnx", "prune"),
    "robprune_deploy.attacks": ("RobustLoss", "ThreatModel"),
    "robprune_deploy.evaluation": ("evaluate_onnx",),
    "robprune_deploy.export": ("export_onnx",),
    "robprune_deploy.masking": ("apply_masks", "masks_of"),
    "robprune_deploy.models": ("NormalizedClassifier",),
    "robprune_deploy.surgery": ("ChannelGroups", "ModelCount", "count_model", "ignored_layer_names", "prunable_layers"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:  # a submodule (``from robprune_deploy import distributed``) is imported by Python itself
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))


__all__ = [
    "ALGORITHMS",
    "DEFAULT_THREAT",
    "AlgorithmConfig",
    "ArgumentError",
    "ChannelGroups",
    "CheckpointError",
    "CompressionAlgorithm",
    "CompressionStage",
    "DatasetError",
    "Decision",
    "Granularity",
    "ModelCount",
    "NormalizedClassifier",
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
    "SearchScope",
    "ShapeError",
    "ThreatModel",
    "TrackingError",
    "UnknownNameError",
    "adversarial_train",
    "apply_masks",
    "count_model",
    "evaluate_onnx",
    "export_onnx",
    "gate_onnx",
    "ignored_layer_names",
    "masks_of",
    "prunable_layers",
    "prune",
]
