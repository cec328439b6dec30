"""``random``: each prunable layer loses a random ``ratio`` of its weights (a sanity baseline)."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

import robprune_deploy as rp


class RandomConfig(rp.AlgorithmConfig):
    """The recipe's ``compression.config`` for ``random`` (unknown keys are errors)."""

    seed: int = Field(0, ge=0, description="seed of the random masks")


class RandomPruning(rp.CompressionAlgorithm):
    """Masks drawn at random, the same fraction in every layer outside the ignored scope."""

    Config: ClassVar[type[rp.AlgorithmConfig]] = RandomConfig
    granularities = (rp.Granularity.UNSTRUCTURED,)
    description = "random unstructured masks (sanity baseline)"

    def apply(self, model: nn.Module, context: rp.PruningContext) -> rp.PruningResult:
        config = self.config
        assert isinstance(config, RandomConfig)
        model = model.to(context.device)
        dense = rp.count_model(model, context.example_inputs)  # counted before any mask
        ignored = rp.ignored_layer_names(model, context.ignored_scope)
        generator = torch.Generator().manual_seed(config.seed)
        masks: dict[str, torch.Tensor] = {}
        for name, layer in rp.prunable_layers(model).items():  # Conv2d and Linear, by qualified name
            if name in ignored:
                continue
            weight = layer.get_parameter("weight")
            order = torch.rand(weight.numel(), generator=generator).argsort()
            keep = torch.ones(weight.numel(), dtype=torch.bool)  # True keeps a weight
            keep[order[: int(context.ratio * weight.numel())]] = False
            masks[f"{name}.weight"] = keep.view_as(weight).to(context.device)
        rp.apply_masks(model, masks)  # frozen: fine-tuning keeps these weights at exactly zero
        return rp.PruningResult(
            model,
            algorithm="random",
            granularity=rp.Granularity.UNSTRUCTURED,
            ratio=context.ratio,
            example_inputs=context.example_inputs,
            dense_count=dense,
            ignored_scope=context.ignored_scope,
            extra={"masked_parameters": sorted(masks)},
        )
