"""The ``mrpf`` and ``l1_filter`` algorithms: structured pruning of coupled channel groups."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field
from torch import nn

from robprune_deploy import (
    AlgorithmConfig,
    ChannelGroups,
    CompressionAlgorithm,
    Decision,
    Granularity,
    NumericalError,
    PruningContext,
    PruningResult,
    SearchScope,
    distributed,
)
from robprune_mrpf.allocation import allocate, inverse_sensitivity_weights, refine_to_target
from robprune_mrpf.cost import CostModel
from robprune_mrpf.report import plot_allocation
from robprune_mrpf.sensitivity import (
    Batches,
    activation_sensitivity,
    loss_sensitivity,
    probe_keep,
    weight_perturbation_sensitivity,
)

logger = logging.getLogger(__name__)


class L1FilterConfig(AlgorithmConfig):
    """Uniform structured pruning: every group loses the same fraction of its lowest-L1 channels."""

    unit: Literal["macs", "params"] = Field("macs", description="what compression.ratio reduces")
    max_ratio: float = Field(0.95, gt=0, lt=1, description="at most this fraction of a group is removed")
    round_to: int = Field(
        1, ge=1, le=4096, description="kept channels rounded to a multiple of this (8 for fast CPU/GPU kernels)"
    )


class MRPFConfig(L1FilterConfig):
    """MRPF: MRS-weighted ratios (more sensitive groups pruned less)."""

    estimator: Literal["weight_perturbation", "loss", "activation"] = Field(
        "weight_perturbation",
        description="how MRS is measured: weight_perturbation (worst-case robust-loss rise in a relative ball "
        "around the group's kernels, after RiFT), loss (probe pruning) or activation",
    )
    perturbation_radius: float = Field(
        0.1, gt=0, le=10, description="weight_perturbation: the ball's radius relative to the kernels' norm (RiFT: 0.1)"
    )
    perturbation_steps: int = Field(5, ge=1, le=1000, description="weight_perturbation: projected ascent steps")
    probe_ratio: float = Field(0.5, gt=0, lt=1, description="loss: fraction of a group zeroed to probe its MRS")
    calibration_size: int = Field(256, gt=0, le=10_000_000, description="calibration examples for MRS")
    eps: float = Field(1e-3, gt=0, description="added to MRS before inversion")


AllocationConfigT = TypeVar("AllocationConfigT", bound=L1FilterConfig)


class GroupAllocation(CompressionAlgorithm[AllocationConfigT]):
    """Per-group ratios matched to a MACs (or params) target; the lowest-L1 channels of each group go.

    Subclasses weight the groups by :meth:`sensitivities` (none: one ratio everywhere).
    """

    granularities = (Granularity.CHANNEL,)

    def sensitivities(self, model: nn.Module, groups: ChannelGroups, context: PruningContext) -> dict[str, float]:
        return {}

    def search(self, scope: SearchScope) -> Decision:
        config, context, model, example = self.config, scope.context, scope.model, scope.example_inputs
        groups = scope.channel_groups()
        mrs = self.sensitivities(model, groups, context)
        broken = [name for name, value in mrs.items() if not math.isfinite(value)]
        if broken:
            raise NumericalError(f"prune: the module robustness sensitivity of group {broken[0]} is {mrs[broken[0]]}")
        weights = (
            inverse_sensitivity_weights(mrs, getattr(config, "eps", 1e-3)) if mrs else {g.name: 1.0 for g in groups}
        )
        cost = CostModel.build(model, groups, example, config.unit, config.round_to)
        ratios, _ = allocate(weights, cost, context.ratio, config.max_ratio)
        # The uniform baseline keeps one ratio everywhere (its MACs land within a channel's worth of
        # the target); MRPF hands the rounding overshoot back to its most sensitive groups.
        # (Rounded channel counts move in steps of round_to, so the refinement applies to exact counts only.)
        exact = mrs and config.round_to == 1
        channel_ratios = refine_to_target(ratios, weights, cost, context.ratio) if exact else ratios
        planned = cost.reduction(channel_ratios)
        importance = groups.l1_importance()
        keep = {name: probe_keep(importance[name], ratio, config.round_to) for name, ratio in channel_ratios.items()}
        extra = {
            "unit": config.unit,
            "mrs": mrs,
            "ratios": ratios,
            "channel_ratios": channel_ratios,
            "weights": weights,
            "planned_reduction": planned,
            "kept_channels": {n: int(k.sum()) for n, k in keep.items()},
            "channels": {g.name: g.num_channels for g in groups},
            "units": {g.name: g.unit for g in groups},
        }
        return Decision(channel_keep=keep, extra=extra)

    def finish(self, result: PruningResult) -> None:
        stats = result.statistics()
        result.extra["achieved_reduction"] = (
            stats.macs_reduction if self.config.unit == "macs" else stats.params_reduction
        )

    def achieved_ratio(self, result: PruningResult) -> float:
        """The MACs (or params) reduction, the unit of ``compression.ratio`` here."""
        return float(result.extra["achieved_reduction"])

    def report(self, result: PruningResult, directory: Path) -> list[Path]:
        return plot_allocation(result, directory)


class L1Filter(GroupAllocation[L1FilterConfig]):
    """Uniform L1-filter structured pruning (Li et al. 2017) on coupled groups, matched to a MACs target."""

    description = "uniform per-group ratio, lowest-L1 channels removed (structured baseline)"
    name = "l1_filter"


class MRPF(GroupAllocation[MRPFConfig]):
    """Module Robust Pruning and Fine-tuning (Bai et al.): MRS-adaptive structured pruning.

    MRS estimators: :mod:`robprune_mrpf.sensitivity` (the paper's own equation was not available;
    the default follows RiFT's module robust criticality).

    Fine-tuning (PGD-AT or TRADES) and BatchNorm recalibration run in the pipeline's finetune stage.
    """

    description = "module robustness sensitivity sets per-group ratios; channels removed physically"
    name = "mrpf"

    def sensitivities(self, model: nn.Module, groups: ChannelGroups, context: PruningContext) -> dict[str, float]:
        config = self.config
        batches = calibration_batches(context, config.calibration_size)
        was_training = model.training
        try:
            if config.estimator == "weight_perturbation":
                mrs = weight_perturbation_sensitivity(
                    model,
                    groups,
                    batches,
                    context.threat,
                    config.perturbation_radius,
                    config.perturbation_steps,
                    context.seed,
                )
            elif config.estimator == "loss":
                mrs = loss_sensitivity(model, groups, batches, context.threat, config.probe_ratio, context.seed)
            else:
                mrs = activation_sensitivity(model, groups, batches, context.threat, context.seed)
        finally:
            model.train(was_training)
        # Each rank calibrates on its own shard; the average makes every rank allocate alike.
        mrs = distributed.all_mean_values(mrs, context.device)
        context.log_epoch("prune", 0, {f"mrs/{name}": value for name, value in mrs.items()})
        return mrs


def calibration_batches(context: PruningContext, size: int) -> Batches:
    """The first ``size`` training examples of epoch 0 (a fixed, seeded calibration set)."""
    batches: Batches = []
    seen = 0
    for x, y in context.epoch_batches(0):
        take = min(len(y), size - seen)
        batches.append((x[:take], y[:take]))
        seen += take
        if seen >= size:
            break
    return batches
