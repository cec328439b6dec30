"""The ``s2ap`` and ``hydra`` algorithms."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from robprune_deploy import AlgorithmConfig, CompressionAlgorithm, Granularity, PruningContext, PruningResult
from robprune_deploy.masking import apply_masks
from robprune_deploy.surgery import ChannelGroups, count_model
from robprune_s2ap.report import plot_history
from robprune_s2ap.search import SearchSettings, search_masks
from robprune_s2ap.setup_scores import ScoreInit, attach_channel, attach_unstructured

logger = logging.getLogger(__name__)


class HydraConfig(AlgorithmConfig):
    """Options of the HYDRA mask search (``compression.config`` in a recipe).

    The recipe's ``compression.ratio`` is the fraction of weights masked in every layer
    (``unstructured``) or the fraction of channels removed from every coupled channel group
    (``channel``); with ``scope: global`` it holds over all layers (groups) together instead.
    For channel results, the parameter and MACs reductions this gives are reported in the
    result's statistics (they differ from the ratio: removing a channel also shrinks the next
    layer's input).
    """

    granularity: Granularity = Field(Granularity.UNSTRUCTURED, description="unstructured (paper) or channel")
    epochs: int = Field(10, ge=1, le=10_000, description="mask-search epochs")
    lr: float = Field(0.1, gt=0, description="score learning rate (SGD, cosine)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    scope: Literal["local", "global"] = Field("local", description="top-k per layer or over all layers")
    score_init: ScoreInit = Field(
        "scaled", description="scaled: sqrt(6/fan_in) * w / max|w| (L1 per channel); kaiming: random, HYDRA's ablation"
    )
    measure_radius: float = Field(0.1, ge=0, description="radius at which score-space sharpness is measured")
    hessian_eigenvalue: bool = Field(False, description="also measure the top Hessian eigenvalue (analysis runs)")
    hessian_iterations: int = Field(10, ge=1, le=1_000)


class S2APConfig(HydraConfig):
    """HYDRA's options plus the score-space sharpness-aware step."""

    gamma: float = Field(0.1, ge=0, description="relative radius: ||z_l|| = gamma * ||s_l||; 0 is HYDRA")
    warmup_epochs: int = Field(5, ge=0, le=10_000, description="plain HYDRA epochs before the ascent starts (clipped)")
    ascent_every: int = Field(
        1,
        ge=1,
        le=10_000,
        description=(
            "recompute the ascent gradient every k steps and reuse its direction in between "
            "(1: the paper's step; k > 1 trades exactness for about 1/k of the ascent's extra pass)"
        ),
    )


class S2AP(CompressionAlgorithm):
    """Score-space sharpness-aware adversarial pruning (Piras et al. 2025) on HYDRA's scores."""

    Config: ClassVar[type[AlgorithmConfig]] = S2APConfig
    granularities = (Granularity.UNSTRUCTURED, Granularity.CHANNEL)
    description = "score-space sharpness-aware adversarial pruning (HYDRA scores + SAM in score space)"
    name: ClassVar[str] = "s2ap"

    def _ascent(self) -> tuple[float, int, int]:
        """``(gamma, warmup_epochs, ascent_every)`` of the search; HYDRA's is the no-ascent triple."""
        config = self.config
        assert isinstance(config, S2APConfig)
        warmup = min(config.warmup_epochs, config.epochs)
        if config.gamma > 0 and warmup == config.epochs:
            logger.warning(
                "s2ap: warmup_epochs (%d) >= epochs (%d): no epoch takes the ascent, this run is HYDRA",
                config.warmup_epochs,
                config.epochs,
            )
        return config.gamma, warmup, config.ascent_every

    def apply(self, model: nn.Module, context: PruningContext) -> PruningResult:
        """Search masks on ``model`` in place; returns it with frozen masks (scores removed).

        ``result.extra`` holds ``gamma``, ``warmup_epochs``, ``epochs`` (one dict of measurements
        per mask-search epoch: robust loss, perturbed loss, sharpness, mask flips, sparsity, step
        time), ``layer_sparsity_per_epoch`` and the final ``sparsity_per_layer``.
        """
        config = self.config
        assert isinstance(config, HydraConfig)
        model = model.to(context.device)
        example = context.example_inputs.to(context.device)
        dense = count_model(model, example)
        groups = None
        if config.granularity is Granularity.CHANNEL:
            groups = ChannelGroups(model, example, context.ignored_scope)
            for name, reason in groups.skipped.items():
                logger.warning("%s: group %s left unpruned: %s", self.name, name, reason)
            score_set = attach_channel(model, groups, context.ratio, config.scope, config.score_init, context.seed)
        else:
            score_set = attach_unstructured(
                model, context.ratio, config.scope, context.ignored_scope, config.score_init, context.seed
            )
        score_set.refresh()
        gamma, warmup, ascent_every = self._ascent()
        settings = SearchSettings(
            epochs=config.epochs,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            gamma=gamma,
            warmup_epochs=warmup,
            measure_radius=config.measure_radius,
            hessian_eigenvalue=config.hessian_eigenvalue,
            hessian_iterations=config.hessian_iterations,
            ascent_every=ascent_every,
        )
        history = search_masks(model, score_set, context, settings)
        final = score_set.masks()
        _, history.sparsity_per_layer = score_set.sparsity()
        score_set.detach_from_model()
        keep: dict[str, torch.Tensor] | None = None
        if groups is not None:
            keep = {name: mask.cpu() for name, mask in final.items()}
            apply_masks(model, groups.parameter_masks(keep))
        else:
            apply_masks(model, {f"{name}.weight": mask for name, mask in final.items()})
        return PruningResult(
            model,
            algorithm=self.name,
            granularity=config.granularity,
            ratio=context.ratio,
            example_inputs=example,
            dense_count=dense,
            channel_keep=keep,
            ignored_scope=context.ignored_scope,
            extra={
                "gamma": gamma,
                "warmup_epochs": warmup,
                **history.to_dict(),
                **({"skipped_groups": dict(groups.skipped)} if groups is not None else {}),
            },
        )

    def report(self, result: PruningResult, directory: Path) -> list[Path]:
        return plot_history(result, directory)


class HYDRA(S2AP):
    """HYDRA (Sehwag et al. 2020): S2AP with ``gamma = 0``, the same code path minus the ascent."""

    Config: ClassVar[type[AlgorithmConfig]] = HydraConfig
    description = "HYDRA importance-score mask search under a robust loss (S2AP with gamma = 0)"
    name: ClassVar[str] = "hydra"

    def _ascent(self) -> tuple[float, int, int]:
        return 0.0, 0, 1
