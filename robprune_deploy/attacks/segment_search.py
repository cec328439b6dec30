"""The closest adversarial point on the segment from an input to a known adversarial point.

Minimum-norm attacks stop near, not on, the decision boundary: FAB overshoots by ``eta`` and
pulls back by ``beta``, FMN's radius oscillates by ``gamma``. The original FAB code ends with a
search on the segment from the input to the best point (fra31/fab-attack, ``final_search``, a
linear-approximation search) and FMN's reference code bisects the same kind of segment to start
from a known adversarial point (pralab/Fast-Minimum-Norm-FMN-Attack, ``binary_search_steps``).
This is that bisection: it keeps the adversarial end of the bracket, so the point returned is
always adversarial and never farther than the one given, and it does not stall on a point that
lies exactly on a boundary (where a secant step can land, and which may round to either class).
"""

from __future__ import annotations

import torch
from torch import nn

from robprune_deploy.attacks.norms import Norm, distance


@torch.no_grad()
def closest_on_segment(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    steps: int,
    norm: Norm,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bisect ``x + t (x_adv - x)``, ``t`` in [0, 1], for ``steps`` steps, per example.

    :param x_adv: misclassified points (rows that are not are returned unchanged, as any row whose
        bisection finds nothing closer).
    :returns: the closest misclassified point found on each segment and its ``norm`` distance
        from ``x`` (the bracket shrinks by half per step: ``steps = 20`` leaves ``1e-6`` of the
        segment's length).
    """
    shape = (-1, *[1] * (x.dim() - 1))
    lo = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    hi = torch.ones_like(lo)
    best = x_adv.clone()
    for _ in range(steps):
        mid = (lo + hi) / 2
        point = x + mid.view(shape) * (x_adv - x)
        fooled = model(point).argmax(1) != y
        hi = torch.where(fooled, mid, hi)
        lo = torch.where(fooled, lo, mid)
        best[fooled] = point[fooled]
    return best, distance(best - x, norm)
