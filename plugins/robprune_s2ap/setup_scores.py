"""Attaching score vectors to a model, unstructured or per coupled channel group."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from robprune_deploy.errors import PruningError
from robprune_deploy.surgery import ChannelGroups, ignored_layer_names, prunable_layers
from robprune_s2ap.scores import ScoreSet, ScoreVector, kaiming_init, keep_count, scaled_init

ScoreInit = Literal["scaled", "kaiming"]


def attach_unstructured(
    model: nn.Module,
    ratio: float,
    scope: str,
    ignored_scope: Any | None,
    init: ScoreInit = "scaled",
    seed: int = 0,
) -> ScoreSet:
    """One score per weight of every Conv2d/Linear layer not ignored (biases are not masked)."""
    ignored = ignored_layer_names(model, ignored_scope)
    score_set = ScoreSet(model, scope)
    layers = {n: m for n, m in prunable_layers(model).items() if n not in ignored}
    if not layers:
        raise PruningError("ignored_scope excludes every prunable layer")
    generator = torch.Generator().manual_seed(seed)
    for name, layer in layers.items():
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        if init == "scaled":
            values = scaled_init(weight)
        else:
            values = kaiming_init(tuple(weight.shape), weight[0].numel(), generator).to(weight)
        vector = score_set.add_vector(name, ScoreVector(values, keep_count(weight.numel(), ratio)))
        score_set.attach(name, "weight", vector, tuple(weight.shape))
    return score_set


def attach_channel(
    model: nn.Module,
    groups: ChannelGroups,
    ratio: float,
    scope: str,
    init: ScoreInit = "scaled",
    seed: int = 0,
) -> ScoreSet:
    """One score per channel of each coupled group, shared by every out-layer parameter of the group.

    In an attention group the unit is a head: its one score masks the head's q, k and v rows.

    ``ratio`` is the fraction of each group's channels removed (local scope) or of all groups'
    channels together (global scope). The scaled init is the group's per-channel L1 norm, scaled
    like HYDRA's weight init.
    """
    score_set = ScoreSet(model, scope)
    importance = groups.l1_importance()
    modules = dict(model.named_modules())
    if not groups.groups:
        raise PruningError("the model has no prunable channel group (all ignored?)")
    generator = torch.Generator().manual_seed(seed)
    for group in groups.groups:
        root = modules[group.name].weight
        assert isinstance(root, torch.Tensor)
        if init == "scaled":
            l1 = importance[group.name].to(root.device, root.dtype)
            values = (6.0 / root[0].numel()) ** 0.5 * l1 / l1.abs().max().clamp_min(1e-12)
        else:
            values = kaiming_init((group.num_channels,), root[0].numel(), generator).to(root)
        vector = score_set.add_vector(group.name, ScoreVector(values, keep_count(group.num_channels, ratio)))
        for layer in group.out_layers:
            rows = groups.row_units(group.name, layer)  # an attention's q/k/v rows -> their head
            for pname, param in list(modules[layer].named_parameters(recurse=False)):
                if rows is None and param.shape[0] != group.num_channels:
                    raise PruningError(
                        f"channel group {group.name!r}: {layer}.{pname} does not index the group's channels "
                        "along its first axis (concatenations are not supported for channel scores)"
                    )
                view = (param.shape[0],) + (1,) * (param.dim() - 1)
                score_set.attach(layer, pname, vector, view, None if rows is None else rows.to(param.device))
    return score_set
