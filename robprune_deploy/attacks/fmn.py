"""FMN, L-inf: the Fast Minimum-Norm attack (Pintor, Roli, Brendel, Biggio, "Fast Minimum-norm
Adversarial Attacks through Adaptive Norm Constraints", NeurIPS 2021, Algorithm 1).

Gradient steps on the logit margin ``z_y - max_{j != y} z_j`` inside an L-inf ball whose radius
adapts: before the first adversarial point it jumps to the linear estimate of the boundary
(``||delta|| + |margin| / ||grad||_1``), then it shrinks by ``1 - gamma`` while the iterate is
adversarial and grows by ``1 + gamma`` while it is not. Step ``alpha`` and ``gamma`` follow cosine
schedules. The result is each example's smallest adversarial L-inf distance found, from which the
robust accuracy at every eps (the security curve) follows in one run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from robprune_deploy.attacks.losses import margin
from robprune_deploy.attacks.outcome import frozen_parameters


def fmn_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 100,
    alpha_init: float = 1.0,
    alpha_final: float | None = None,
    gamma_init: float = 0.05,
    gamma_final: float = 0.001,
    on_step: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest adversarial L-inf perturbation found per example.

    :returns: ``(x_adv, distance)``: the closest adversarial point (the input where none was found)
        and its L-inf distance (0 for inputs already misclassified, ``inf`` where none was found).
    """
    alpha_final = alpha_init / 100 if alpha_final is None else alpha_final
    n = len(x)
    x = x.detach()
    shape = (-1, *[1] * (x.dim() - 1))
    delta = torch.zeros_like(x)
    radius = torch.full((n,), float("inf"), device=x.device)
    worst = torch.maximum(x, 1 - x).flatten(1).amax(1)
    with torch.no_grad():
        misclassified = model(x).argmax(1) != y
    best_dist = torch.where(misclassified, torch.zeros_like(radius), torch.full_like(radius, float("inf")))
    best = x.clone()
    found = misclassified.clone()
    with frozen_parameters(model):
        for i in range(steps):
            cosine = (1 + math.cos(math.pi * i / steps)) / 2
            alpha = alpha_final + (alpha_init - alpha_final) * cosine
            gamma = gamma_final + (gamma_init - gamma_final) * cosine
            delta.requires_grad_(True)
            logits = model(x + delta).float()
            m = margin(logits, y)
            (grad,) = torch.autograd.grad(-m.sum(), delta)
            with torch.no_grad():
                delta = delta.detach()
                norm = delta.flatten(1).abs().amax(1)
                adversarial = m < 0
                closer = adversarial & (norm < best_dist)
                best_dist = torch.where(closer, norm, best_dist)
                best = torch.where(closer.view(shape), x + delta, best)
                found |= adversarial
                to_boundary = m.abs() / grad.flatten(1).abs().sum(1).clamp_min(1e-12)
                radius = torch.where(
                    adversarial,
                    torch.minimum(radius * (1 - gamma), best_dist),
                    torch.where(found, radius * (1 + gamma), norm + to_boundary),
                )
                radius = torch.minimum(radius, worst)
                step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
                delta = delta + alpha * step
                delta = torch.max(torch.min(delta, radius.view(shape)), -radius.view(shape))
                delta = (x + delta).clamp(0, 1) - x
            if on_step is not None:
                on_step()
    return best.detach(), best_dist
