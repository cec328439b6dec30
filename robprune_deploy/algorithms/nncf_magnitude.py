"""``nncf_magnitude``: NNCF's unstructured magnitude pruning (``nncf.prune``) through this pipeline.

A thin adapter: ``nncf.prune`` computes the binary masks on a copy of the model; they are read off
its ``UnstructuredPruningMask`` hooks and attached to the model as frozen masks, so NNCF's baseline
is fine-tuned, stripped, exported and gated exactly like the robust algorithms.
"""

from __future__ import annotations

import copy
import re
from typing import Literal

import torch
from pydantic import Field

from robprune_deploy.algorithms.granularity import Granularity
from robprune_deploy.algorithms.template import AlgorithmConfig, CompressionAlgorithm, Decision, SearchScope
from robprune_deploy.errors import PruningError

_HOOK_NAME = re.compile(r"post_hooks\.(?P<param>.+?)__\d+\.\d+$")


class NNCFMagnitudeConfig(AlgorithmConfig):
    scope: Literal["local", "global"] = Field("local", description="nncf.PruneMode UNSTRUCTURED_MAGNITUDE_LOCAL/GLOBAL")


class NNCFMagnitude(CompressionAlgorithm[NNCFMagnitudeConfig]):
    """Unstructured magnitude pruning by ``nncf.prune`` (no robustness awareness): the NNCF baseline."""

    name = "nncf_magnitude"
    granularities = (Granularity.UNSTRUCTURED,)
    description = "nncf.prune unstructured magnitude masks (NNCF baseline)"

    def search(self, scope: SearchScope) -> Decision:
        import nncf

        mode = (
            nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL
            if self.config.scope == "global"
            else nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_LOCAL
        )
        pruned = nncf.prune(
            copy.deepcopy(scope.model).eval(), mode, ratio=scope.context.ratio, examples_inputs=scope.example_inputs
        )
        masks: dict[str, torch.Tensor] = {}
        for name, module in pruned.named_modules():
            match = _HOOK_NAME.search(name)
            if type(module).__name__ != "UnstructuredPruningMask" or match is None:
                continue
            param = match.group("param").replace(":", ".")
            if param.rpartition(".")[0] not in scope.ignored:
                masks[param] = module.binary_mask.detach().to(torch.bool).cpu()
        if not masks:
            raise PruningError("nncf.prune produced no masks for this model")
        return Decision(masks=masks, extra={"nncf_mode": str(mode), "masked_parameters": sorted(masks)})
