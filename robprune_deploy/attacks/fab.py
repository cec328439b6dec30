"""FAB-T, L-inf: the targeted Fast Adaptive Boundary attack (Croce & Hein, "Minimally distorted
adversarial examples with a fast adaptive boundary attack", ICML 2020), as used in AutoAttack.

Each step linearizes the decision boundary between the true class ``y`` and the target ``t`` at
the current point, projects both the current point and the original input onto that hyperplane
(within the [0, 1] box, minimal L-inf change), and moves to a convex combination of the two
projections biased towards the original input (``alpha <= alpha_max``), overshooting by ``eta``.
Once a point is adversarial it is recorded when closer than the best so far, and the iterate is
pulled back towards the input by ``beta``. The attack minimizes the perturbation; for a
robustness figure an example counts as broken only if the smallest adversarial found is within
``eps``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robprune_deploy.attacks.outcome import AttackOutcome, frozen_parameters


def project_onto_hyperplane_linf(points: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest L-inf step ``d`` with ``w . (p + d) = b`` and ``0 <= p + d <= 1``, per row.

    Moving coordinate ``i`` by ``r`` in the direction that helps (``sign(c) sign(w_i)``, with
    ``c = b - w . p``) gains ``|w_i| min(r, room_i)``, where ``room_i`` is the distance to the box
    in that direction. The total gain is piecewise linear and non-decreasing in ``r``, so the
    smallest sufficient radius is found on the sorted rooms. When even the whole box is not enough,
    the step that gets closest is returned (every coordinate at its bound).

    :param points: ``N x D``; :param w: ``N x D``; :param b: ``N``.
    """
    c = b - (w * points).sum(1)
    direction = torch.sign(c)[:, None] * torch.sign(w)
    room = torch.where(direction > 0, 1 - points, points).clamp_min(0)
    weight = w.abs()
    room_sorted, order = room.sort(1)
    weight_sorted = weight.gather(1, order)
    # gain at r = room_sorted[k]: sum_{j<=k} w_j room_j + room_k * sum_{j>k} w_j
    below = torch.cumsum(weight_sorted * room_sorted, 1)
    above = weight_sorted.flip(1).cumsum(1).flip(1) - weight_sorted
    gain = below + room_sorted * above
    need = c.abs()
    k = torch.searchsorted(gain, need[:, None]).squeeze(1).clamp_max(points.shape[1] - 1)
    # on the segment ending at room_sorted[k]: gain(r) = below[k-1] + r * (weight above k-1)
    below_prev = torch.where(k > 0, below.gather(1, (k - 1).clamp_min(0)[:, None]).squeeze(1), torch.zeros_like(need))
    slope = weight_sorted.flip(1).cumsum(1).flip(1).gather(1, k[:, None]).squeeze(1)
    radius = ((need - below_prev) / slope.clamp_min(1e-12)).clamp_min(0)
    reachable = gain[:, -1] >= need
    radius = torch.where(reachable, torch.minimum(radius, room_sorted.gather(1, k[:, None]).squeeze(1)), room.amax(1))
    step = direction * torch.minimum(room, radius[:, None])
    return step * (w != 0)


def fab_targeted(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 100,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    on_step: Callable[[], None] | None = None,
) -> tuple[AttackOutcome, torch.Tensor]:
    """FAB-T towards ``target`` from the clean inputs (AutoAttack's first restart has no random start).

    :returns: the outcome (``x_adv``: the closest adversarial point found, or the input) and the
        L-inf distance of that point per example (``inf`` where none was found). ``success`` means
        an adversarial point was found at any distance; the caller compares the distance to eps.
    """
    n, shape = len(x), x.shape
    x = x.detach()
    flat = x.flatten(1)
    best_dist = torch.full((n,), float("inf"), device=x.device)
    best = x.clone()
    ever = torch.zeros(n, dtype=torch.bool, device=x.device)
    current = x.clone()
    trace = torch.empty(steps + 1, n, device=x.device)
    trace[0] = -best_dist
    rows = torch.arange(n, device=x.device)
    with frozen_parameters(model):
        for i in range(steps):
            points = current.clone().requires_grad_(True)
            logits = model(points).float()
            # f_t - f_y: positive on the target's side of the boundary
            gap = logits[rows, target] - logits[rows, y]
            (grad,) = torch.autograd.grad(gap.sum(), points)
            with torch.no_grad():
                w = grad.flatten(1)
                # zero of the linearization: gap + w . (z - current) = 0
                b = (w * current.flatten(1)).sum(1) - gap.detach()
                both = project_onto_hyperplane_linf(
                    torch.cat((current.flatten(1), flat)), torch.cat((w, w)), b.repeat(2)
                )
                d_current, d_origin = both[:n], both[n:]
                a1 = d_current.abs().amax(1).clamp_min(1e-8)
                a2 = d_origin.abs().amax(1).clamp_min(1e-8)
                alpha = (a1 / (a1 + a2)).clamp(0, alpha_max)[:, None]
                moved = ((current.flatten(1) + eta * d_current) * (1 - alpha) + (flat + eta * d_origin) * alpha).clamp(
                    0, 1
                )
                candidate = moved.view(shape)
                fooled = model(candidate).argmax(1) != y
                ever |= fooled
                dist = (moved - flat).abs().amax(1)
                closer = fooled & (dist < best_dist)
                best[closer], best_dist[closer] = candidate[closer], dist[closer]
                pulled = flat + (moved - flat) * beta
                current = torch.where(fooled[:, None], pulled, moved).view(shape)
                trace[i + 1] = -best_dist
            if on_step is not None:
                on_step()
    success = torch.isfinite(best_dist)
    return AttackOutcome(best, success, ever, trace, n * steps * 2), best_dist
