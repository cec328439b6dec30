"""Module robustness sensitivity (MRS): how much the robust loss rises when a group is pruned.

``loss`` estimator (default): ``MRS_l = L_adv(model with group l probe-pruned) - L_adv(model)``,
the probe zeroing the ``p`` fraction of the group's channels with the lowest L1 norm and PGD
recomputed against the probed model. ``activation`` estimator: the relative change of the group's
output under attack, ``||f_l(x_adv) - f_l(x)|| / ||f_l(x)||``, averaged over the calibration set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robprune_deploy.attacks import ThreatModel, pgd
from robprune_deploy.masking import apply_masks, remove_masks
from robprune_deploy.surgery import ChannelGroups
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
