"""Module robustness sensitivity (MRS): how much the robust loss of a coupled channel group's
module can rise.

The MRPF paper (Bai, Tabia, Santos-Rodriguez, arXiv 2410.15176) names MRS "a novel metric that
quantifies layer-wise sensitivity to adversarial perturbations", but its defining equation was not
in any text of the paper we could read (both versions' abstracts and the start of the
introduction). The default estimator is therefore our reading of it, taken from the closest
published definition, RiFT's module robust criticality (Zhu et al. 2023, arXiv 2308.02533; code
microsoft/robustlearn ``RiFT/main.py layer_sharpness``):

``weight_perturbation`` (default):
``MRS_l = max_{||dw_l|| <= rho * ||w_l||} L_adv(w + dw_l) - L_adv(w)``, ``w_l`` the kernels of the
layers producing group ``l``'s channels, ``L_adv`` the cross-entropy on PGD examples crafted once
against the unperturbed model (as RiFT does), the max found by a few normalized gradient-ascent
steps projected onto the ball.

Earlier estimators, defined here: ``loss``: ``MRS_l = L_adv(model with group l probe-pruned) -
L_adv(model)``, the probe zeroing the ``p`` fraction of the group's channels with the lowest L1 norm
and PGD recomputed against the probed model. ``activation``: the relative change of the group's
output under attack, ``||f_l(x_adv) - f_l(x)|| / ||f_l(x)||``, averaged over the calibration set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robprune_deploy.attacks import ThreatModel, pgd
from robprune_deploy.masking import apply_masks, remove_masks
from robprune_deploy.surgery import ChannelGroup, ChannelGroups
from robprune_mrpf.cost import removed_channels

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def probe_keep(importance: torch.Tensor, ratio: float, round_to: int = 1) -> torch.Tensor:
    """Keep mask removing the ``ratio`` fraction of channels with the lowest importance."""
    n_remove = removed_channels(importance.numel(), ratio, round_to)
    keep = torch.ones(importance.numel(), dtype=torch.bool)
    keep[torch.argsort(importance, stable=True)[:n_remove]] = False
    return keep


def adversarial_loss(model: nn.Module, batches: Batches, threat: ThreatModel, seed: int) -> float:
    """Mean cross-entropy on PGD examples crafted against ``model`` itself (eval mode, seeded)."""
    model.eval()
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for x, y in batches:
            x_adv = pgd(model, x, y, threat)
            with torch.no_grad():
                total += F.cross_entropy(model(x_adv), y, reduction="sum").item()
            count += len(y)
    return total / max(count, 1)


def loss_sensitivity(
    model: nn.Module, groups: ChannelGroups, batches: Batches, threat: ThreatModel, probe_ratio: float, seed: int
) -> dict[str, float]:
    """MRS of every group with the ``loss`` estimator (one PGD evaluation per group, plus one)."""
    importance = groups.l1_importance()
    base = adversarial_loss(model, batches, threat, seed)
    result = {}
    for group in groups.groups:
        keep = {group.name: probe_keep(importance[group.name], probe_ratio)}
        apply_masks(model, groups.parameter_masks(keep))
        try:
            result[group.name] = adversarial_loss(model, batches, threat, seed) - base
        finally:
            remove_masks(model)
    return result


def activation_sensitivity(
    model: nn.Module, groups: ChannelGroups, batches: Batches, threat: ThreatModel, seed: int
) -> dict[str, float]:
    """MRS of every group with the ``activation`` estimator (one PGD evaluation in total)."""
    outputs: dict[str, list[torch.Tensor]] = {g.name: [] for g in groups.groups}
    hooks = [
        model.get_submodule(g.name).register_forward_hook(lambda _m, _i, out, n=g.name: outputs[n].append(out.detach()))
        for g in groups.groups
    ]
    model.eval()
    ratio_sum = {g.name: 0.0 for g in groups.groups}
    count = 0
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for x, y in batches:
                x_adv = pgd(model, x, y, threat)
                for values in outputs.values():
                    values.clear()
                with torch.no_grad():
                    model(x)
                    model(x_adv)
                for name, (clean, adv) in ((n, (v[0], v[1])) for n, v in outputs.items()):
                    diff = (adv - clean).flatten(1).norm(dim=1)
                    ratio_sum[name] += (diff / clean.flatten(1).norm(dim=1).clamp_min(1e-12)).sum().item()
                count += len(y)
    finally:
        for h in hooks:
            h.remove()
    return {name: total / max(count, 1) for name, total in ratio_sum.items()}


PROJECTED_STEP = 2.5
"""Each ascent step moves ``PROJECTED_STEP / steps`` of the ball's radius (Madry et al.'s PGD rule,
2.5 eps / steps, in weight space): the boundary is reached within the first half of the steps."""


def group_kernels(model: nn.Module, group: ChannelGroup) -> list[torch.Tensor]:
    """The kernels (weights with two or more dimensions) of the layers producing ``group``'s channels."""
    kernels = []
    for name in group.out_layers:
        weight = getattr(model.get_submodule(name), "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim > 1:
            kernels.append(weight)
    return kernels


def _loss_and_gradients(
    model: nn.Module, adversarial: Batches, kernels: list[torch.Tensor]
) -> tuple[float, list[torch.Tensor]]:
    """Mean cross-entropy over ``adversarial`` and its gradient with respect to ``kernels``."""
    total, count = 0.0, 0
    gradients = [torch.zeros_like(k) for k in kernels]
    for x_adv, y in adversarial:
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        for g, part in zip(gradients, torch.autograd.grad(loss, kernels), strict=True):
            g += part
        total += loss.item()
        count += len(y)
    return total / max(count, 1), [g / max(count, 1) for g in gradients]


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([(t.double() ** 2).sum() for t in tensors]).sum().sqrt()


def worst_case_rise(
    model: nn.Module, adversarial: Batches, kernels: list[torch.Tensor], radius: float, steps: int
) -> float:
    """``max L_adv(w + dw) - L_adv(w)`` over ``||dw|| <= radius * ||w||`` (``w``: ``kernels``
    together), by ``steps`` normalized gradient-ascent steps, each projected onto the ball. The
    kernels are restored before returning."""
    origin = [k.detach().clone() for k in kernels]
    ball = radius * float(_norm(origin))
    step = PROJECTED_STEP * ball / steps
    delta = [torch.zeros_like(k) for k in origin]
    base = worst = float("-inf")
    try:
        for t in range(steps + 1):
            loss, gradients = _loss_and_gradients(model, adversarial, kernels)
            base = loss if t == 0 else base
            worst = max(worst, loss)
            if t == steps:
                break
            scale = step / (float(_norm(gradients)) + 1e-20)
            delta = [d + scale * g for d, g in zip(delta, gradients, strict=True)]
            size = float(_norm(delta))
            if size > ball:
                delta = [d * (ball / size) for d in delta]
            with torch.no_grad():
                for k, o, d in zip(kernels, origin, delta, strict=True):
                    k.copy_(o + d)
    finally:
        with torch.no_grad():
            for k, o in zip(kernels, origin, strict=True):
                k.copy_(o)
    return worst - base


def weight_perturbation_sensitivity(
    model: nn.Module,
    groups: ChannelGroups,
    batches: Batches,
    threat: ThreatModel,
    radius: float,
    steps: int,
    seed: int,
) -> dict[str, float]:
    """MRS of every group with the ``weight_perturbation`` estimator (eval mode; one PGD run, then
    ``steps + 1`` gradient evaluations of the calibration set per group)."""
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adversarial = [(pgd(model, x, y, threat).detach(), y) for x, y in batches]
    return {
        group.name: worst_case_rise(model, adversarial, group_kernels(model, group), radius, steps)
        for group in groups.groups
    }
