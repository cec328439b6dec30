"""``random``: each prunable layer loses a random ``ratio`` of its weights (a sanity baseline)."""

from __future__ import annotations

import torch
from pydantic import Field

import robprune_deploy as rp


class RandomConfig(rp.AlgorithmConfig):
    """The recipe's ``compression.config`` for ``random`` (unknown keys are errors)."""

    seed: int = Field(0, ge=0, description="seed of the random masks")


class RandomPruning(rp.CompressionAlgorithm[RandomConfig]):  # the type argument is the Config: self.config is typed
    """Masks drawn at random, the same fraction in every layer outside the ignored scope."""

    name = "random"  # the entry-point name, written into the result
    granularities = (rp.Granularity.UNSTRUCTURED,)
    description = "random unstructured masks (sanity baseline)"

    def search(self, scope: rp.SearchScope) -> rp.Decision:
        # apply() has counted the dense model and resolved the ignored scope; it attaches these masks
        generator = torch.Generator().manual_seed(self.config.seed)
        masks: dict[str, torch.Tensor] = {}
        for name, layer in scope.layers().items():  # Conv2d and Linear outside the ignored scope
            weight = layer.get_parameter("weight")
            order = torch.rand(weight.numel(), generator=generator).argsort()
            keep = torch.ones(weight.numel(), dtype=torch.bool)  # True keeps a weight
            keep[order[: int(scope.context.ratio * weight.numel())]] = False
            masks[f"{name}.weight"] = keep.view_as(weight)
        return rp.Decision(masks=masks, extra={"masked_parameters": sorted(masks)})
