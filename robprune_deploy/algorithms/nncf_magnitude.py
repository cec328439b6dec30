"""``nncf_magnitude``: NNCF's unstructured magnitude pruning (``nncf.prune``) through this pipeline.

A thin adapter: ``nncf.prune`` computes the binary masks on a copy of the model; they are read off
its ``UnstructuredPruningMask`` hooks and attached to the model as frozen masks, so NNCF's baseline
is fine-tuned, stripped, exported and gated exactly like the robust algorithms.
"""

from __future__ import annotations

import copy
import re
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from robprune_deploy.algorithms.base import AlgorithmConfig, CompressionAlgorithm, Granularity, PruningContext
from robprune_deploy.algorithms.result import PruningResult
from robprune_deploy.errors import PruningError
from robprune_deploy.masking import apply_masks
from robprune_deploy.surgery import count_model, ignored_layer_names

_HOOK_NAME = re.compile(r"post_hooks\.(?P<param>.+?)__\d+\.\d+$")


class NNCFMagnitudeConfig(AlgorithmConfig):
    scope: Literal["local", "global"] = Field("local", description="nncf.PruneMode UNSTRUCTURED_MAGNITUDE_LOCAL/GLOBAL")


class NNCFMagnitude(CompressionAlgorithm):
    """Unstructured magnitude pruning by ``nncf.prune`` (no robustness awareness): the NNCF baseline."""

    Config: ClassVar[type[AlgorithmConfig]] = NNCFMagnitudeConfig
    granularities = (Granularity.UNSTRUCTURED,)
    description = "nncf.prune unstructured magnitude masks (NNCF baseline)"

    def apply(self, model: nn.Module, context: PruningContext) -> PruningResult:
        import nncf

        config = self.config
        assert isinstance(config, NNCFMagnitudeConfig)
        example = context.example_inputs.to(context.device)
        model = model.to(context.device)
        mode = (
            nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL
            if config.scope == "global"
            else nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_LOCAL
        )
        pruned = nncf.prune(copy.deepcopy(model).eval(), mode, ratio=context.ratio, examples_inputs=example)
        ignored = ignored_layer_names(model, context.ignored_scope)
        masks: dict[str, torch.Tensor] = {}
        for name, module in pruned.named_modules():
            match = _HOOK_NAME.search(name)
            if type(module).__name__ != "UnstructuredPruningMask" or match is None:
                continue
            param = match.group("param").replace(":", ".")
            if param.rpartition(".")[0] not in ignored:
                masks[param] = module.binary_mask.detach().to(torch.bool).cpu()
        if not masks:
            raise PruningError("nncf.prune produced no masks for this model")
        apply_masks(model, {k: v.to(context.device) for k, v in masks.items()})
        return PruningResult(
            model,
            algorithm="nncf_magnitude",
            granularity=Granularity.UNSTRUCTURED,
            ratio=context.ratio,
            example_inputs=example,
            dense_count=count_model(model, example),
            ignored_scope=context.ignored_scope,
            extra={"nncf_mode": str(mode), "masked_parameters": sorted(masks)},
        )
