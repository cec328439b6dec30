"""Frozen 0/1 masks on parameters (the state after mask search, kept through fine-tuning)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from robprune_deploy.errors import MaskShapeError


class FixedMask(nn.Module):
    """Parametrization ``w -> w * mask`` with the mask stored as a (non-trainable) buffer."""

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone().to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)


def _split(name: str) -> tuple[str, str]:
    module_name, _, param = name.rpartition(".")
    return module_name, param


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Attach a :class:`FixedMask` to every parameter named in ``masks`` (in place).

    :param masks: ``{"body.conv1.weight": bool_tensor_of_the_same_shape, ...}``.
    :raises MaskShapeError: when a name is not a parameter of ``model`` or a shape differs.
    """
    for name, mask in masks.items():
        module_name, param = _split(name)
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            raise MaskShapeError(f"mask {name!r}: the model has no module {module_name!r}") from None
        # On an already masked parameter a second mask composes with the first.
        current = getattr(module, param, None)
        if not isinstance(current, torch.Tensor):
            raise MaskShapeError(f"mask {name!r}: the model has no such parameter")
        if tuple(current.shape) != tuple(mask.shape):
            raise MaskShapeError(f"mask {name!r}: shape {tuple(mask.shape)} != parameter {tuple(current.shape)}")
        parametrize.register_parametrization(module, param, FixedMask(mask.to(current.device)))
    return model


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The combined fixed mask of every masked parameter of ``model``."""
    result: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        lists: nn.ModuleDict = module.parametrizations
        for param, plist in lists.items():
            fixed = [p.mask for p in plist.children() if isinstance(p, FixedMask)]
            if fixed:
                combined = fixed[0].clone()
                for extra in fixed[1:]:
                    combined &= extra
                result[f"{module_name}.{param}" if module_name else param] = combined
    return result


def has_masks(model: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m) for m in model.modules())


def fold_masks(model: nn.Module) -> nn.Module:
    """Replace every parametrized parameter by its masked value, leaving a plain module (in place).

    ``parametrize.remove_parametrizations`` deletes the property from the module's dynamically
    created class, and a deep copy of a parametrized model shares that class with the original;
    folding a copy that way would break the original. So the class is swapped back to the plain
    base class here, and the shared class is left untouched.
    """
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        lists: nn.ModuleDict = module.parametrizations  # type: ignore[assignment]
        values = {}
        for name, plist in lists.items():
            original: torch.Tensor = plist.original  # type: ignore[assignment]
            values[name] = (getattr(module, name).detach().clone(), original.requires_grad)
        del module._modules["parametrizations"]
        module.__class__ = module.__class__.__bases__[0]
        for name, (value, requires_grad) in values.items():
            module._parameters[name] = nn.Parameter(value, requires_grad=requires_grad)
    return model


def remove_masks(model: nn.Module) -> nn.Module:
    """Drop every mask, restoring the original dense parameters (in place)."""
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        lists: nn.ModuleDict = module.parametrizations  # type: ignore[assignment]
        for param in list(lists.keys()):
            parametrize.remove_parametrizations(module, param, leave_parametrized=False)
    return model
