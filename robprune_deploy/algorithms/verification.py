"""A pruning result is checked before anything is built on it: it is one, its masks fit the model, it
reached its target, and its weights are finite. An algorithm that misses is an error, not a summary
with sparsity 0.0."""

from __future__ import annotations

import math

import torch

from robprune_deploy.algorithms.result import PruningResult
from robprune_deploy.algorithms.template import CompressionAlgorithm
from robprune_deploy.errors import MaskShapeError, NumericalError, PruningError
from robprune_deploy.masking import FixedMask


def verify_masks(result: object) -> PruningResult:
    """``result`` is a :class:`PruningResult` whose every mask has exactly its parameter's shape.

    torch accepts a mask that broadcasts (``[out, 1, 1, 1]`` on a conv weight) and the masked model
    then computes something the algorithm did not mean, so shapes are compared exactly.

    :raises TypeError: when ``result`` is not a :class:`PruningResult` (a bug of the algorithm).
    :raises MaskShapeError: for a mask whose shape differs from its parameter's.
    """
    if not isinstance(result, PruningResult):
        raise TypeError(f"apply returned {type(result).__name__}, not a PruningResult")
    for module_name, module in result.model.named_modules():
        chains = getattr(module, "parametrizations", None)
        if chains is None:
            continue
        for param, chain in chains.items():
            original: torch.Tensor = chain.original
            for item in chain:
                if isinstance(item, FixedMask) and tuple(item.mask.shape) != tuple(original.shape):
                    raise MaskShapeError(
                        f"mask '{module_name}.{param}': shape {tuple(item.mask.shape)} != parameter "
                        f"{tuple(original.shape)}"
                    )
    return result


def verify_result(algorithm: CompressionAlgorithm, result: PruningResult, name: str, tolerance: float) -> float:
    """The ratio ``result`` achieved, when it lies within ``tolerance`` of ``result.ratio``.

    :param name: the algorithm's registry name, for the message.
    :raises PruningError: when the achieved ratio is further than ``tolerance`` from the target.
    :raises NumericalError: when a weight or mask of the result is NaN or inf.
    """
    for key, tensor in result.model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NumericalError(f"prune: {name} produced NaN or inf in {key}")
    achieved = float(algorithm.achieved_ratio(result))
    if not math.isfinite(achieved) or abs(achieved - result.ratio) > tolerance:
        raise PruningError(
            f"compression.ratio {result.ratio:g}: {name} reached {achieved:.4f} ({result.granularity.value}), "
            f"more than compression.tolerance {tolerance:g} away; check compression.config (e.g. round_to, "
            f"max_ratio) and compression.ignored_scope"
        )
    return achieved
