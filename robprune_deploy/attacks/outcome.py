"""What a white-box attack run reports per example, for the ensemble and for the failure indicators."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AttackOutcome:
    """One white-box attack on a batch.

    :param x_adv: per example, the adversarial point when ``success``, else the attack's best point
        (highest loss), always inside the threat model.
    :param success: the attacked model misclassifies ``x_adv``.
    :param ever_adversarial: some iterate was misclassified (an attack that then returns a
        non-adversarial point has a "silent success", Pintor et al. 2022).
    :param loss_trace: ``(steps + 1) x N``: the best loss reached so far after each step (a curve
        still rising at the end means the optimization was incomplete).
    :param gradient_evals: forward+backward passes spent, counted per example.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    ever_adversarial: torch.Tensor
    loss_trace: torch.Tensor
    gradient_evals: int


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring gradients for the duration: an attack differentiates the input only."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def project_linf(x_new: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Clip ``x_new`` into the L-inf ball of radius ``eps`` around ``x`` and into the [0, 1] box."""
    return torch.min(torch.max(x_new, x - eps), x + eps).clamp(0.0, 1.0)


def uniform_start(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A random start on the L-inf sphere scaled by ``eps`` (the noise is drawn on the CPU so a seed
    gives the same points on any device)."""
    t = torch.rand(x.shape, generator=generator) * 2 - 1
    t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    return (x + eps * t.to(x.device, x.dtype)).clamp(0.0, 1.0)
