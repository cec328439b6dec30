"""A pruning result is checked before anything is built on it: it reached its target, and its
weights are finite. An algorithm that misses is an error, not a summary with sparsity 0.0."""

from __future__ import annotations

import math

import torch

from robprune_deploy.algorithms.base import CompressionAlgorithm
from robprune_deploy.algorithms.result import PruningResult
from robprune_deploy.errors import NumericalError, PruningError


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
