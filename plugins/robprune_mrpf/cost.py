"""The cost (MACs or weight parameters) of a model as a function of per-group pruning ratios.

Each Conv2d/Linear layer's cost scales with the kept fraction of the group that owns its output
channels and of the group that feeds its input channels (a depthwise convolution, whose input
and output are the same group, scales once). This is exact for integer channel counts, so the
ratio search can hit a MACs or params target without stripping the model at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robprune_deploy.surgery import ChannelGroups, count_model


def _weight(model: nn.Module, layer: str) -> torch.Tensor:
    weight = model.get_submodule(layer).weight
    assert isinstance(weight, torch.Tensor)
    return weight


def removed_channels(num_channels: int, ratio: float, round_to: int = 1) -> int:
    """Channels removed from a group of ``num_channels`` at ``ratio`` (at least one survives).

    With ``round_to > 1`` the kept count is rounded to a multiple of it: inference kernels
    (onnxruntime's blocked NCHWc convolutions, tensor cores) run at full speed only on channel
    counts that are multiples of 8 or 16, so odd counts can cost more than the MACs they save.
    """
    keep = num_channels - round(ratio * num_channels)
    if round_to > 1 and num_channels >= round_to:
        keep = max(round_to, round(keep / round_to) * round_to)
    return num_channels - min(max(keep, 1), num_channels)


@dataclass(frozen=True)
class CostModel:
    dense: dict[str, int]  # layer -> dense cost
    out_group: dict[str, str]
    in_group: dict[str, str]
    channels: dict[str, int]  # group -> channels
    round_to: int = 1

    @classmethod
    def build(
        cls, model: nn.Module, groups: ChannelGroups, example: torch.Tensor, unit: str, round_to: int = 1
    ) -> CostModel:
        count = count_model(model, example)
        dense = {n: (c.macs if unit == "macs" else _weight(model, n).numel()) for n, c in count.layers.items()}
        out_group, in_group = {}, {}
        for g in groups.groups:
            for layer in g.out_layers:
                out_group[layer] = g.name
            for layer in g.in_layers:
                in_group[layer] = g.name
        return cls(dense, out_group, in_group, {g.name: g.num_channels for g in groups.groups}, round_to)

    def kept_fraction(self, group: str | None, ratios: dict[str, float]) -> float:
        if group is None or group not in ratios:
            return 1.0
        c = self.channels[group]
        return (c - removed_channels(c, ratios[group], self.round_to)) / c

    def cost(self, ratios: dict[str, float]) -> float:
        total = 0.0
        for layer, dense in self.dense.items():
            out_g, in_g = self.out_group.get(layer), self.in_group.get(layer)
            factor = self.kept_fraction(out_g, ratios)
            if in_g != out_g:
                factor *= self.kept_fraction(in_g, ratios)
            total += dense * factor
        return total

    def reduction(self, ratios: dict[str, float]) -> float:
        dense = sum(self.dense.values())
        return 1.0 - self.cost(ratios) / dense if dense else 0.0
