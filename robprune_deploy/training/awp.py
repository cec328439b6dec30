"""Adversarial weight perturbation (AWP; Wu, Xia and Wang 2020, "Adversarial Weight Perturbation
Helps Robust Generalization"), as its reference code (csdongxian/AWP, ``utils_awp.py``) does it.

Each training step first maximizes the robust loss over a layer-wise relative perturbation of the
weights, then minimizes it there:

1. ``g_l = grad_{w_l} L_rob(w; x, x', y)`` for every weight ``w_l`` with two or more dimensions
   (conv and linear kernels; BatchNorm scales and biases are not perturbed, as in the reference's
   ``diff_in_weights``). The reference takes one SGD step on a proxy copy of the model and keeps
   the normalized difference, which is this gradient's direction;
2. ``v_l = ||w_l|| * g_l / (||g_l|| + 1e-20)`` and the weights become ``w + gamma * v``;
3. the optimizer steps with the gradient taken at ``w + gamma * v`` and ``gamma * v`` is then taken
   off again (the reference's ``perturb`` / ``restore``).

A masked (pruned) weight is perturbed only on its kept entries and its norm is that of the kept
entries: the ascent gradient is zero on pruned entries anyway (the mask multiplies it), and the
explicit mask keeps them exactly where they are, so pruning is never undone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robprune_deploy import distributed
from robprune_deploy.attacks import RobustLoss, loss_on_adversarial
from robprune_deploy.masking import masks_of

NORM_EPS = 1e-20
"""The reference's ``EPS`` in ``||w|| / (||d|| + EPS) * d``: a layer with a zero gradient is not moved."""


@dataclass(frozen=True)
class AWPPlan:
    """``gamma``: the relative size of the perturbation of every layer (the AWP paper uses 5e-3);
    ``warmup_epochs``: plain steps before AWP starts (the reference's ``--awp-warmup``)."""

    gamma: float = 0.005
    warmup_epochs: int = 0

    def active(self, epoch: int) -> bool:
        return self.gamma > 0 and epoch >= self.warmup_epochs


def _masked_name(parameter_name: str) -> str:
    """``conv.parametrizations.weight.original`` -> ``conv.weight`` (the key of :func:`masks_of`)."""
    module, found, rest = parameter_name.rpartition("parametrizations.")
    if not found or not rest.endswith(".original"):
        return parameter_name
    return f"{module}{rest.removesuffix('.original')}"


def perturbed_weights(model: nn.Module) -> list[tuple[str, nn.Parameter, torch.Tensor | None]]:
    """``(name, parameter, mask or None)`` of every trainable kernel AWP perturbs."""
    masks = masks_of(model)
    return [
        (name, p, masks.get(_masked_name(name)))
        for name, p in model.named_parameters()
        if p.requires_grad and p.ndim > 1 and "weight" in name
    ]


@dataclass
class WeightPerturbation:
    """The perturbation ``gamma * v`` added to ``parameters`` (in place); :meth:`restore` takes it off."""

    parameters: list[nn.Parameter]
    deltas: list[torch.Tensor]

    def restore(self) -> None:
        with torch.no_grad():
            for p, delta in zip(self.parameters, self.deltas, strict=True):
                p.sub_(delta)


def relative_directions(
    weights: list[tuple[str, nn.Parameter, torch.Tensor | None]], gradients: list[torch.Tensor]
) -> list[torch.Tensor]:
    """``v_l = ||w_l|| * g_l / (||g_l|| + eps)``, both norms over the kept entries of a masked weight."""
    directions = []
    for (_, p, mask), g in zip(weights, gradients, strict=True):
        w = p.detach()
        if mask is not None:
            keep = mask.to(w.dtype)
            w, g = w * keep, g * keep
        directions.append(w.norm() / (g.norm() + NORM_EPS) * g)
    return directions


def perturb_weights(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    base: RobustLoss,
    gamma: float,
    trades_beta: float = 6.0,
    mart_beta: float = 6.0,
) -> WeightPerturbation:
    """Add AWP's ``gamma * v`` to ``model``'s kernels for the batch ``(x, x_adv, y)`` and return it.

    The ascent loss is ``base``'s outer loss in the model's current mode, as the reference computes
    it on its proxy in train mode; BatchNorm running statistics are restored afterwards (the
    reference keeps them out of the model by using the proxy). Under ``torchrun`` the gradients are
    averaged over ranks first, so every rank applies (and later removes) the same perturbation.
    """
    weights = perturbed_weights(model)
    if not weights:
        return WeightPerturbation([], [])
    buffers = [b.detach().clone() for b in model.buffers()]
    try:
        loss = loss_on_adversarial(model, x, y, x_adv, base, trades_beta, mart_beta)
        gradients = list(torch.autograd.grad(loss, [p for _, p, _ in weights], allow_unused=True))
    finally:
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)
    gradients = [
        torch.zeros_like(p) if g is None else g.detach() for (_, p, _), g in zip(weights, gradients, strict=True)
    ]
    distributed.all_mean_(gradients)
    deltas = [gamma * v for v in relative_directions(weights, gradients)]
    with torch.no_grad():
        for (_, p, _), delta in zip(weights, deltas, strict=True):
            p.add_(delta)
    return WeightPerturbation([p for _, p, _ in weights], deltas)
