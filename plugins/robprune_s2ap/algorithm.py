"""The ``s2ap`` and ``hydra`` algorithms."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationInfo, field_validator, model_validator

from robprune_deploy import AlgorithmConfig, CompressionAlgorithm, Decision, Granularity, PruningResult, SearchScope
from robprune_deploy.attacks import RobustLoss
from robprune_s2ap.report import plot_history
from robprune_s2ap.search import SearchSettings, search_masks
from robprune_s2ap.setup_scores import ScoreInit, attach_channel, attach_unstructured
from robprune_s2ap.stability import MASK_FILE_SUFFIX, final_masks, mask_sha256, save_masks

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
    search_loss: RobustLoss = Field(
        RobustLoss.TRADES,
        description="robust loss of the mask search, independent of finetune.loss (HYDRA's trainer/adv.py: TRADES)",
    )
    search_trades_beta: float = Field(6.0, ge=0, description="TRADES's KL weight in the search (HYDRA: 6)")
    search_mart_beta: float = Field(6.0, ge=0, description="MART's KL weight in the search")
    train_bn: bool = Field(
        True, description="train BatchNorm's affine parameters with the scores (HYDRA; false: its --freeze-bn)"
    )
    measure_radius: float = Field(0.1, ge=0, description="radius at which score-space sharpness is measured")
    hessian_eigenvalue: bool = Field(
        True, description="measure the top Hessian eigenvalue in score space every epoch (power iteration)"
    )
    hessian_iterations: int = Field(20, ge=1, le=1_000, description="most power iterations (stops when converged)")


DEFAULT_SWAP_FRACTION = 0.02
"""The radius when neither ``gamma`` nor ``swap_fraction`` is set [defined here]: one ascent swaps 2%
of the kept entries; 2% lies between the fixed radii that barely move the mask and those that wreck it
(docs/concepts/algorithms.md, "Where each option comes from" and "S2AP's radius"); choose it on
validation (``recipes/sweeps/digits_s2ap_radius.yaml``)."""


class S2APConfig(HydraConfig):
    """HYDRA's options plus the score-space sharpness-aware step.

    The ascent's radius is fixed (``gamma``) or calibrated (``swap_fraction``, the default at
    2%); setting both is an error.
    """

    gamma: float | None = Field(None, ge=0, description="fixed relative radius: ||z_l|| = gamma * ||s_l||; 0 is HYDRA")
    swap_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description=(
            "calibrated radius: each epoch, per layer, the gamma at which one ascent swaps this fraction "
            f"of the kept entries (default {DEFAULT_SWAP_FRACTION} unless gamma is set)"
        ),
    )
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

    @model_validator(mode="before")
    @classmethod
    def _default_radius(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("gamma") is None and data.get("swap_fraction") is None:
            return {**data, "swap_fraction": DEFAULT_SWAP_FRACTION}
        return data

    @field_validator("swap_fraction")
    @classmethod
    def _one_radius(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("gamma") is not None:
            raise ValueError("set either gamma (a fixed radius) or swap_fraction (a calibrated one), not both")
        return value


HydraConfigT = TypeVar("HydraConfigT", bound=HydraConfig)


class ScoreSearch(CompressionAlgorithm[HydraConfigT]):
    """HYDRA's importance-score mask search, with S2AP's ascent when the subclass asks for one."""

    granularities = (Granularity.UNSTRUCTURED, Granularity.CHANNEL)

    def _ascent(self) -> tuple[float, float | None, int, int]:
        """``(gamma, swap_fraction, warmup_epochs, ascent_every)`` of the search; HYDRA's takes no ascent."""
        return 0.0, None, 0, 1

    def search_settings(self) -> SearchSettings:
        """The mask search this configuration asks for (HYDRA's: no ascent)."""
        config = self.config
        gamma, swap_fraction, warmup, ascent_every = self._ascent()
        return SearchSettings(
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
            swap_fraction=swap_fraction,
            search_loss=config.search_loss,
            trades_beta=config.search_trades_beta,
            mart_beta=config.search_mart_beta,
            train_bn=config.train_bn,
        )

    def search(self, scope: SearchScope) -> Decision:
        """Search masks on ``scope.model``; the scores are removed again afterwards.

        ``result.extra`` holds ``gamma`` (the fixed radius, 0 when calibrated), ``swap_fraction``
        (the calibration's target, or None), ``search_loss``, ``train_bn``, ``warmup_epochs``,
        ``epochs`` (one dict of measurements per mask-search epoch: robust loss, perturbed loss,
        measured swap fraction and radius, sharpness, Hessian eigenvalue, mask flips, sparsity,
        step time), ``layer_sparsity_per_epoch``, ``layer_gamma_per_epoch``, the final
        ``sparsity_per_layer`` and ``final_mask_sha256`` (equal digests: the same final mask).
        """
        config, context, model = self.config, scope.context, scope.model
        if scope.groups is not None:
            score_set = attach_channel(
                model, scope.groups, context.ratio, config.scope, config.score_init, context.seed
            )
        else:
            score_set = attach_unstructured(
                model, context.ratio, config.scope, context.ignored_scope, config.score_init, context.seed
            )
        score_set.refresh()
        settings = self.search_settings()
        history = search_masks(model, score_set, context, settings)
        final = score_set.masks()
        _, history.sparsity_per_layer = score_set.sparsity()
        score_set.detach_from_model()
        extra = {
            "gamma": settings.gamma,
            "swap_fraction": settings.swap_fraction,
            "search_loss": settings.search_loss.value,
            "train_bn": settings.train_bn,
            "warmup_epochs": settings.warmup_epochs,
            **history.to_dict(),
        }
        if scope.groups is not None:
            return Decision(channel_keep=final, extra=extra)
        return Decision(masks={f"{name}.weight": mask for name, mask in final.items()}, extra=extra)

    def finish(self, result: PruningResult) -> None:
        result.extra["final_mask_sha256"] = mask_sha256(final_masks(result))

    def report(self, result: PruningResult, directory: Path) -> list[Path]:
        """The search's plots and ``<algorithm>_final_mask.npz``, the final mask for comparing runs
        (:func:`robprune_s2ap.stability.load_masks`, :func:`~robprune_s2ap.stability.mask_distance`)."""
        mask_file = save_masks(final_masks(result), directory / f"{result.algorithm}{MASK_FILE_SUFFIX}")
        return [*plot_history(result, directory), mask_file]


class HYDRA(ScoreSearch[HydraConfig]):
    """HYDRA (Sehwag et al. 2020): S2AP with ``gamma = 0``, the same code path minus the ascent."""

    description = "HYDRA importance-score mask search under a robust loss (S2AP with gamma = 0)"
    name = "hydra"


class S2AP(ScoreSearch[S2APConfig]):
    """Score-space sharpness-aware adversarial pruning (Piras et al. 2025) on HYDRA's scores."""

    description = "score-space sharpness-aware adversarial pruning (HYDRA scores + SAM in score space)"
    name = "s2ap"

    def _ascent(self) -> tuple[float, float | None, int, int]:
        config = self.config
        warmup = min(config.warmup_epochs, config.epochs)
        gamma = config.gamma if config.gamma is not None else 0.0
        if (gamma > 0 or config.swap_fraction is not None) and warmup == config.epochs:
            logger.warning(
                "s2ap: warmup_epochs (%d) >= epochs (%d): no epoch takes the ascent, this run is HYDRA",
                config.warmup_epochs,
                config.epochs,
            )
        return gamma, config.swap_fraction, warmup, config.ascent_every
