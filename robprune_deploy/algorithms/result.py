"""The outcome of an algorithm: the masked model, its statistics, and ``strip()``."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any

import torch
from torch import nn

from robprune_deploy.algorithms.granularity import Granularity
from robprune_deploy.masking import fold_masks, masks_of
from robprune_deploy.surgery import (
    ChannelGroups,
    ModelCount,
    count_model,
    ignored_layer_names,
    prunable_layers,
)


class CompressionStage(IntEnum):
    """As in NNCF: how far the model is from the configured compression."""

    UNCOMPRESSED = 0
    PARTIALLY_COMPRESSED = 1
    FULLY_COMPRESSED = 2


@dataclass(frozen=True)
class LayerStatistics:
    name: str
    params: int
    kept_params: int
    sparsity: float
    out_channels: int
    kept_out_channels: int


@dataclass
class PruningStatistics:
    """What was pruned, per layer and in total, dense vs pruned.

    ``params_pruned`` and ``macs_pruned`` count what remains: physically remaining entries for
    ``channel`` granularity, non-zero weights (and the MACs that touch them) for ``unstructured``.
    ``sparsity`` is the zero fraction of the prunable (not ignored) layers' weights.
    ``extra`` holds the algorithm's own measurements (per-epoch histories, MRS values, ...).
    """

    algorithm: str
    granularity: str
    target_ratio: float
    params_dense: int
    params_pruned: int
    macs_dense: int
    macs_pruned: int
    sparsity: float
    layers: list[LayerStatistics] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def macs_reduction(self) -> float:
        return 1.0 - self.macs_pruned / self.macs_dense if self.macs_dense else 0.0

    @property
    def params_reduction(self) -> float:
        return 1.0 - self.params_pruned / self.params_dense if self.params_dense else 0.0

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["macs_reduction"] = self.macs_reduction
        result["params_reduction"] = self.params_reduction
        return result

    def layer_table(self) -> str:
        """A Markdown table of the per-layer statistics."""
        rows = ["| layer | params | kept | sparsity | out channels | kept channels |", "|---|---:|---:|---:|---:|---:|"]
        rows += [
            f"| {s.name} | {s.params} | {s.kept_params} | {s.sparsity:.4f} | {s.out_channels} | {s.kept_out_channels} |"
            for s in self.layers
        ]
        skipped: dict[str, str] = self.extra.get("skipped_groups") or {}
        if skipped:
            rows += ["", "Groups left unpruned (removing their channels would change the function):", ""]
            rows += [f"- {name}: {reason}" for name, reason in skipped.items()]
        return "\n".join(rows)


class PruningResult:
    """A masked model plus what is needed to make it deployable.

    :param model: the model with frozen masks (parametrizations); fine-tuning trains it in place.
    :param algorithm: registry name of the algorithm that produced it.
    :param granularity: :class:`Granularity` of the masks.
    :param ratio: the target the algorithm was asked for.
    :param example_inputs: a batch used for tracing (channel removal) and counting.
    :param dense_count: counts of the model before pruning.
    :param channel_keep: for ``channel`` granularity, ``{group name: bool keep mask}``.
    :param ignored_scope: the scope the algorithm honoured (channel groups are rebuilt with it).
    :param extra: the algorithm's own measurements, returned in :meth:`statistics`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        algorithm: str,
        granularity: Granularity,
        ratio: float,
        example_inputs: torch.Tensor,
        dense_count: ModelCount,
        channel_keep: dict[str, torch.Tensor] | None = None,
        ignored_scope: Any | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if granularity is Granularity.CHANNEL and channel_keep is None:
            raise ValueError("channel granularity needs channel_keep")
        self.model = model
        self.algorithm = algorithm
        self.granularity = granularity
        self.ratio = ratio
        self.example_inputs = example_inputs[:1].detach().cpu()
        self.dense_count = dense_count
        self.channel_keep = channel_keep
        self.ignored_scope = ignored_scope
        self.extra = extra or {}

    def masks(self) -> dict[str, torch.Tensor]:
        """``{parameter name: bool mask}`` of every masked parameter."""
        return masks_of(self.model)

    def strip(self) -> nn.Module:
        """A plain copy of the model: masks folded into the weights and, for ``channel``
        granularity, the pruned channels physically removed (coupled layers together)."""
        device = next(self.model.parameters()).device
        stripped = fold_masks(copy.deepcopy(self.model)).cpu()
        if self.granularity is Granularity.CHANNEL:
            assert self.channel_keep is not None
            groups = ChannelGroups(stripped, self.example_inputs, self.ignored_scope)
            groups.remove(self.channel_keep)
        return stripped.to(device)

    def compression_stage(self) -> CompressionStage:
        stats = self.statistics()
        achieved = stats.macs_reduction if self.granularity is Granularity.CHANNEL else stats.sparsity
        if achieved <= 0:
            return CompressionStage.UNCOMPRESSED
        return (
            CompressionStage.FULLY_COMPRESSED
            if achieved >= self.ratio - 0.01
            else CompressionStage.PARTIALLY_COMPRESSED
        )

    def statistics(self) -> PruningStatistics:
        inputs = self.example_inputs.to(next(self.model.parameters()).device)
        if self.granularity is Granularity.CHANNEL:
            stripped = self.strip()
            pruned = count_model(stripped, inputs)
            params_pruned, macs_pruned = pruned.params, pruned.macs
            kept_channels = {n: c.out_channels for n, c in pruned.layers.items()}
        else:
            pruned = count_model(self.model, inputs)
            params_pruned, macs_pruned = pruned.nonzero_params, pruned.effective_macs
            kept_channels = {}
        masked = count_model(self.model, inputs)
        ignored = ignored_layer_names(self.model, self.ignored_scope)
        layers, total, zeros = [], 0, 0
        for name in prunable_layers(self.model):
            if name not in masked.layers:
                continue
            layer = masked.layers[name]
            weight: torch.Tensor = self.model.get_submodule(name).weight  # type: ignore[assignment]
            kept = int((weight != 0).sum())
            if name not in ignored:
                total += weight.numel()
                zeros += weight.numel() - kept
            layers.append(
                LayerStatistics(
                    name=name,
                    params=weight.numel(),
                    kept_params=kept,
                    sparsity=1.0 - kept / weight.numel(),
                    out_channels=layer.out_channels,
                    kept_out_channels=kept_channels.get(name, layer.out_channels),
                )
            )
        return PruningStatistics(
            algorithm=self.algorithm,
            granularity=self.granularity.value,
            target_ratio=self.ratio,
            params_dense=self.dense_count.params,
            params_pruned=params_pruned,
            macs_dense=self.dense_count.macs,
            macs_pruned=macs_pruned,
            sparsity=zeros / total if total else 0.0,
            layers=layers,
            extra=self.extra,
        )
