"""Parameter and multiply-accumulate counts, dense and effective (non-zero) ones."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle


@dataclass(frozen=True)
class LayerCount:
    """Counts of one Conv2d/Linear layer for one input.

    :param params: weight + bias entries.
    :param nonzero_params: entries that are not exactly zero.
    :param macs: multiply-accumulates of the dense layer.
    :param effective_macs: multiply-accumulates that touch a non-zero weight.
    :param out_channels: output channels (features) of the layer.
    """

    params: int
    nonzero_params: int
    macs: int
    effective_macs: int
    out_channels: int


@dataclass(frozen=True)
class ModelCount:
    """Whole-model counts; ``params`` covers every parameter (BatchNorm too)."""

    params: int
    nonzero_params: int
    macs: int
    effective_macs: int
    layers: dict[str, LayerCount] = field(default_factory=dict)


def traced_forward(model: nn.Module, example_inputs: torch.Tensor, hooks: list[RemovableHandle]) -> None:
    """One eval-mode, no-grad forward of a single sample with ``hooks`` attached; removes them and
    restores the model's mode afterwards, whatever happens."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_inputs[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


def dense_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one Conv2d or Linear ``module`` that produced ``output`` (shapes only,
    so it also counts on the meta device)."""
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    if isinstance(module, nn.Conv2d):
        return int(output.shape[1] * weight[0].numel() * output.shape[2] * output.shape[3])
    return int(weight.numel() * (output.numel() // output.shape[-1]))


def effective_parameters(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every parameter as the forward pass sees it (masked values for parametrized ones)."""
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:  # type: ignore[union-attr]
                yield getattr(module, name).detach()
        if isinstance(module, parametrize.ParametrizationList):
            continue  # its ``original`` is reported through the owner above
        for param in module._parameters.values():
            if param is not None:
                yield param.detach()


def count_model(model: nn.Module, example_inputs: torch.Tensor) -> ModelCount:
    """Count parameters and MACs of ``model`` for one sample shaped like ``example_inputs[:1]``.

    MACs are those of Conv2d and Linear layers (the convention of torch-pruning and the pruning
    literature); ``effective_macs`` scales each layer by its weight density, which is what an
    unstructured sparse kernel could at best save.
    """
    layers: dict[str, LayerCount] = {}
    hooks = []

    def make_hook(name: str, module: nn.Module):  # type: ignore[no-untyped-def]
        def hook(_: nn.Module, __: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            weight: torch.Tensor = module.weight  # type: ignore[assignment]
            bias: torch.Tensor | None = getattr(module, "bias", None)
            params = weight.numel() + (bias.numel() if bias is not None else 0)
            nonzero = int((weight != 0).sum()) + (int((bias != 0).sum()) if bias is not None else 0)
            macs = dense_macs(module, output)
            if isinstance(module, nn.Conv2d):
                positions = output.shape[2] * output.shape[3]
                effective = int((weight != 0).sum()) * positions
                out_channels = int(module.out_channels)
            else:
                effective = int((weight != 0).sum()) * (output.numel() // output.shape[-1])
                out_channels = int(weight.shape[0])
            layers[name] = LayerCount(params, nonzero, macs, int(effective), int(out_channels))

        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(make_hook(name, module)))
    traced_forward(model, example_inputs, hooks)
    effective = list(effective_parameters(model))
    params = sum(p.numel() for p in effective)
    nonzero = sum(int((p != 0).sum()) for p in effective)
    return ModelCount(
        params=params,
        nonzero_params=nonzero,
        macs=sum(c.macs for c in layers.values()),
        effective_macs=sum(c.effective_macs for c in layers.values()),
        layers=layers,
    )
