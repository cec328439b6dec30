"""Coupled channel groups (Torch-Pruning's DepGraph) and physical channel removal.

One :class:`ChannelGroup` is one pruning decision: the output channels of every layer in it are
kept or removed together (a residual stage's convolutions and BatchNorms share one group), so any
keep-set over a group is physically removable and the result has consistent shapes. In an
attention module the unit is a whole head (its q, k, v rows and its output-projection columns);
an MLP's hidden units are ordinary channels.

A group is only offered when zeroing its channels (the masked model that fine-tuning and MRS probes
see) computes exactly what removing them does. Groups that break this are skipped and listed in
:attr:`ChannelGroups.skipped` with the reason: channels normalized together (LayerNorm: the
residual stream of a transformer), channels stored in bare parameters (position embeddings, class
tokens), channels aliased across a split the graph cannot name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import nn

from robprune_deploy.errors import MaskShapeError, PruningError
from robprune_deploy.surgery.attention import AttentionLayout, find_attention, set_num_heads, unsafe_reason
from robprune_deploy.surgery.counting import traced_forward
from robprune_deploy.surgery.scope import ignored_layer_names

MASKABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
)
"""Layers whose output channels are zero when their rows (and affine parameters) are zeroed."""


@dataclass(frozen=True)
class ChannelGroup:
    """A set of coupled output channels, or the heads of one attention module.

    :param name: qualified name of the group's root layer (the layer whose channels index the group).
    :param num_channels: the group's units before pruning: output channels of the root, or heads
        when ``unit`` is ``"head"``. Keep masks, ratios and costs count these units.
    :param out_layers: layers whose *output* channels belong to the group (convs, BatchNorms, ...).
    :param in_layers: layers whose *input* channels shrink with the group.
    :param unit: ``"channel"`` or ``"head"``.
    """

    name: str
    num_channels: int
    out_layers: tuple[str, ...]
    in_layers: tuple[str, ...]
    unit: Literal["channel", "head"] = "channel"


def output_layer_name(model: nn.Module, example_inputs: torch.Tensor) -> str:
    """The last Conv2d/Linear layer executed in a forward pass: the classifier, never pruned."""
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda *_a, n=n: order.append(n))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    traced_forward(model, example_inputs, hooks)
    if not order:
        raise PruningError("the model has no Conv2d or Linear layer to prune")
    return order[-1]


class ChannelGroups:
    """The coupled channel groups of ``model``, built once with a dependency graph.

    :param model: a plain model (fold masks first); removal works on this very object.
    :param example_inputs: a batch shaped like the model's inputs, used to trace the graph.
    :param ignored_scope: an :class:`nncf.IgnoredScope`; a group touching an ignored layer's
        output channels is left out. The classifier is always left out.

    :attr:`skipped` maps the root layer of every group that cannot be pruned safely to the reason.
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, ignored_scope: Any | None = None) -> None:
        self.model = model
        self.example_inputs = example_inputs[:1]
        ignored = ignored_layer_names(model, ignored_scope) | {output_layer_name(model, example_inputs)}
        was_training = model.training
        model.eval()
        try:
            self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=self.example_inputs, verbose=False)
        finally:
            model.train(was_training)
        self._names = {m: n for n, m in model.named_modules()}
        self._param_names = {p: n for n, p in model.named_parameters()}
        modules = dict(model.named_modules())
        attention = find_attention(model)
        self._roots: dict[str, nn.Module] = {}
        self._heads: dict[str, AttentionLayout] = {}
        self.skipped: dict[str, str] = {}
        groups: list[ChannelGroup] = []
        ignored_modules = [modules[n] for n in ignored if n in modules]
        for group in self.graph.get_all_groups(
            ignored_layers=ignored_modules, root_module_types=(nn.Conv2d, nn.Linear)
        ):
            outs, ins = self._members(group)
            if not outs or any(n in ignored for n in outs):
                continue
            root = group[0].dep.target.module
            name = self._names[root]
            self._roots[name] = root
            layout = attention.get(name)
            reason = self._unmaskable(group) or (
                unsafe_reason(model, layout) if layout is not None else self._aliased(name)
            )
            if reason is not None:
                self.skipped[name] = reason
            elif layout is not None:
                groups.append(ChannelGroup(name, layout.num_heads, tuple(outs), tuple(ins), unit="head"))
                self._heads[name] = layout
            else:
                groups.append(ChannelGroup(name, len(group[0].idxs), tuple(outs), tuple(ins)))
        self.groups: tuple[ChannelGroup, ...] = tuple(groups)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def by_name(self) -> dict[str, ChannelGroup]:
        return {g.name: g for g in self.groups}

    def _members(self, group: Any) -> tuple[list[str], list[str]]:
        outs: list[str] = []
        ins: list[str] = []
        for item in group:
            module = item.dep.target.module
            if not isinstance(module, nn.Module) or module not in self._names:
                continue  # element-wise ops, reshapes, bare parameters
            name = self._names[module]
            target = outs if self.graph.is_out_channel_pruning_fn(item.dep.handler) else ins
            if name not in target:
                target.append(name)
        return outs, ins

    def _unmaskable(self, group: Any) -> str | None:
        """Why zeroing this group's channels would differ from removing them, if it would."""
        for item in group:
            target = item.dep.target.module
            if not self.graph.is_out_channel_pruning_fn(item.dep.handler):
                continue
            if isinstance(target, nn.Parameter):
                where = self._param_names.get(target, "a parameter outside any layer")
                return f"its channels live in the bare parameter {where} (embedding, token or scale)"
            if target in self._names and not isinstance(target, MASKABLE_TYPES):
                return (
                    f"its channels pass through {self._names[target]} ({type(target).__name__}), where zeroed "
                    "channels are not removed ones (a LayerNorm normalizes across all of them)"
                )
        return None

    def _aliased(self, name: str) -> str | None:
        """A root channel that drags other channels of the root along (a fused projection split in
        parts the graph couples, e.g. an attention layout this package does not know)."""
        root = self._roots[name]
        fn = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else tp.prune_conv_out_channels
        probe = self.graph.get_pruning_group(root, fn, idxs=[0])
        rows = {i for item in probe if item.dep.target.module is root for i in item.idxs}
        if rows != {0}:
            return f"channel 0 of {name} is coupled with its channels {sorted(rows - {0})[:4]} (a split output)"
        return None

    def _tp_group(self, name: str, units: list[int]) -> Any:
        root = self._roots[name]
        layout = self._heads.get(name)
        idxs = layout.channels(units) if layout is not None else units
        fn = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else tp.prune_conv_out_channels
        return self.graph.get_pruning_group(root, fn, idxs=idxs)

    def row_units(self, name: str, layer: str) -> torch.Tensor | None:
        """The unit (head) of each output row of ``layer`` in head group ``name``; ``None`` when the
        rows are the group's channels themselves."""
        layout = self._heads.get(name)
        return layout.row_heads() if layout is not None and layer == layout.qkv else None

    def _check_keep(self, keep: Mapping[str, torch.Tensor]) -> None:
        groups = self.by_name()
        for name, k in keep.items():
            if name not in groups:
                raise MaskShapeError(f"unknown channel group {name!r}; groups: {', '.join(groups)}")
            if k.dtype != torch.bool or k.numel() != groups[name].num_channels:
                raise MaskShapeError(
                    f"channel group {name!r}: keep mask must be bool of {groups[name].num_channels} entries"
                )
            if not bool(k.any()):
                raise PruningError(f"channel group {name!r}: cannot remove every channel")

    def l1_importance(self) -> dict[str, torch.Tensor]:
        """Per-channel L1 norm of each group's weights (mean over its layers), in root channel order;
        per head, the L1 norm of its q/k/v rows and output-projection columns."""
        importance = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None)
        result = {}
        for g in self.groups:
            layout = self._heads.get(g.name)
            if layout is not None:
                result[g.name] = layout.head_l1(self.model)
                continue
            with torch.no_grad():
                result[g.name] = importance(self._tp_group(g.name, list(range(g.num_channels)))).detach().cpu()
        return result

    def parameter_masks(self, keep: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """0/1 masks over parameters that zero the removed channels of every out-layer of each group.

        The masked model computes exactly what the physically pruned one does: a removed channel's
        conv rows, bias and BatchNorm affine parameters are all zero, so it outputs zero everywhere.
        """
        self._check_keep(keep)
        masks: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        for name, k in keep.items():
            removed = torch.nonzero(~k.cpu()).flatten().tolist()
            if not removed:
                continue
            for item in self._tp_group(name, removed):
                module = item.dep.target.module
                if module not in self._names or not self.graph.is_out_channel_pruning_fn(item.dep.handler):
                    continue
                layer = self._names[module]
                for pname, param in modules[layer].named_parameters(recurse=False):
                    key = f"{layer}.{pname}"
                    mask = masks.get(key, torch.ones_like(param, dtype=torch.bool))
                    mask[list(item.idxs)] = False
                    masks[key] = mask
        return masks

    def remove(self, keep: Mapping[str, torch.Tensor]) -> nn.Module:
        """Physically remove the channels not kept, in place on :attr:`model`; returns the model."""
        self._check_keep(keep)
        for name, k in keep.items():
            removed = torch.nonzero(~k.cpu()).flatten().tolist()
            if removed:
                group = self._tp_group(name, removed)
                if not self.graph.check_pruning_group(group):
                    raise PruningError(f"channel group {name!r}: torch-pruning refused the removal")
                group.prune()
                if name in self._heads:
                    set_num_heads(self.model, self._heads[name], int(k.sum()))
        return self.model
