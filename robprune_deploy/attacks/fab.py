"""FAB-T, L-inf and L2: the targeted Fast Adaptive Boundary attack (Croce & Hein, "Minimally
distorted adversarial examples with a fast adaptive boundary attack", ICML 2020), as used in
AutoAttack.

Each step linearizes the decision boundary between the true class ``y`` and the target ``t`` at
the current point, projects both the current point and the original input onto that hyperplane
(within the [0, 1] box, minimal change in the attack's norm), and moves to a convex combination of
the two projections biased towards the original input (``alpha <= alpha_max``, from the norms of
the two projection steps), overshooting by ``eta``. Once a point is adversarial it is recorded when
closer than the best so far, and the iterate is pulled back towards the input by ``beta``. The
attack minimizes the perturbation; for a robustness figure an example counts as broken only if the
smallest adversarial found is within ``eps``.

L2 differs only in the projection (fra31/auto-attack, ``fab_projections.py``, ``projection_l2``:
:func:`project_onto_hyperplane_l2`) and in the norm that measures steps and distances. The
original FAB code (fra31/fab-attack) ends with a search on the segment from the input to the best
point (``final_search``); AutoAttack does not, and neither does this by default.
``final_search_steps`` adds a bisection there (:mod:`robprune_deploy.attacks.segment_search`):
with overshoot ``eta`` and pull-back ``beta`` FAB settles slightly beyond the boundary (about
1% on a linear model), which the search removes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robprune_deploy.attacks.norms import Norm, check_norm, distance
from robprune_deploy.attacks.outcome import AttackOutcome, frozen_parameters
from robprune_deploy.attacks.segment_search import closest_on_segment


def _smallest_radius(room: torch.Tensor, weight: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest ``r >= 0`` with ``sum_i weight_i min(r, room_i) >= need``.

    The sum is piecewise linear and non-decreasing in ``r``, with breakpoints at the rooms, so the
    root is found on the sorted rooms. When even ``r = max(room)`` is not enough, that is returned
    (every coordinate at its bound: the closest the box allows).
    """
    room_sorted, order = room.sort(1)
    weight_sorted = weight.gather(1, order)
    # gain at r = room_sorted[k]: sum_{j<=k} w_j room_j + room_k * sum_{j>k} w_j
    below = torch.cumsum(weight_sorted * room_sorted, 1)
    above = weight_sorted.flip(1).cumsum(1).flip(1) - weight_sorted
    gain = below + room_sorted * above
    k = torch.searchsorted(gain, need[:, None]).squeeze(1).clamp_max(room.shape[1] - 1)
    # on the segment ending at room_sorted[k]: gain(r) = below[k-1] + r * (weight above k-1)
    below_prev = torch.where(k > 0, below.gather(1, (k - 1).clamp_min(0)[:, None]).squeeze(1), torch.zeros_like(need))
    slope = weight_sorted.flip(1).cumsum(1).flip(1).gather(1, k[:, None]).squeeze(1)
    radius = ((need - below_prev) / slope.clamp_min(1e-12)).clamp_min(0)
    reachable = gain[:, -1] >= need
    return torch.where(reachable, torch.minimum(radius, room_sorted.gather(1, k[:, None]).squeeze(1)), room.amax(1))


def _towards_hyperplane(points: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate, the sign of the move that helps reach ``w . p = b`` and the room the [0, 1]
    box leaves in that direction."""
    c = b - (w * points).sum(1)
    direction = torch.sign(c)[:, None] * torch.sign(w)
    room = torch.where(direction > 0, 1 - points, points).clamp_min(0)
    return direction, room


def project_onto_hyperplane_linf(points: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest L-inf step ``d`` with ``w . (p + d) = b`` and ``0 <= p + d <= 1``, per row.

    Moving coordinate ``i`` by ``r`` in the direction that helps (``sign(c) sign(w_i)``, with
    ``c = b - w . p``) gains ``|w_i| min(r, room_i)``, where ``room_i`` is the distance to the box
    in that direction: the smallest sufficient radius ``r`` is :func:`_smallest_radius`'s. When
    even the whole box is not enough, the step that gets closest is returned (every coordinate at
    its bound).

    :param points: ``N x D``; :param w: ``N x D``; :param b: ``N``.
    """
    direction, room = _towards_hyperplane(points, w, b)
    radius = _smallest_radius(room, w.abs(), (b - (w * points).sum(1)).abs())
    step = direction * torch.minimum(room, radius[:, None])
    return step * (w != 0)


def project_onto_hyperplane_l2(points: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest L2 step ``d`` with ``w . (p + d) = b`` and ``0 <= p + d <= 1``, per row (the
    problem of ``projection_l2`` in fra31/auto-attack's ``fab_projections.py``).

    By the KKT conditions the solution is ``d_i = direction_i min(lambda |w_i|, room_i)`` for one
    ``lambda >= 0``: coordinate ``i`` gains ``w_i^2 min(lambda, room_i / |w_i|)``, the L-inf
    problem's sum with weights ``w_i^2`` and rooms ``room_i / |w_i|``, so :func:`_smallest_radius`
    solves it. When the box cannot reach the hyperplane every coordinate goes to its bound.

    :param points: ``N x D``; :param w: ``N x D``; :param b: ``N``.
    """
    direction, room = _towards_hyperplane(points, w, b)
    magnitude = w.abs()
    moves = magnitude > 0
    # a coordinate with w_i = 0 gains nothing: room 0 keeps it out of the sum and the step
    scaled_room = torch.where(moves, room / magnitude.where(moves, torch.ones_like(magnitude)), torch.zeros_like(room))
    lam = _smallest_radius(scaled_room, w * w, (b - (w * points).sum(1)).abs())
    step = direction * torch.minimum(room, lam[:, None] * magnitude)
    return step * moves


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
    norm: Norm = "linf",
    final_search_steps: int = 0,
    on_step: Callable[[], None] | None = None,
) -> tuple[AttackOutcome, torch.Tensor]:
    """FAB-T towards ``target`` from the clean inputs (AutoAttack's first restart has no random start).

    :param norm: the norm minimized, ``linf`` or ``l2``.
    :param final_search_steps: bisection steps on the segment from each input to its closest
        adversarial point, after the FAB steps (0: none, as in AutoAttack).
    :returns: the outcome (``x_adv``: the closest adversarial point found, or the input) and the
        distance of that point per example in ``norm`` (``inf`` where none was found). ``success``
        means an adversarial point was found at any distance; the caller compares it to eps.
    """
    norm = check_norm(norm)
    project = project_onto_hyperplane_linf if norm == "linf" else project_onto_hyperplane_l2
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
                both = project(torch.cat((current.flatten(1), flat)), torch.cat((w, w)), b.repeat(2))
                d_current, d_origin = both[:n], both[n:]
                a1 = distance(d_current, norm).clamp_min(1e-8)
                a2 = distance(d_origin, norm).clamp_min(1e-8)
                alpha = (a1 / (a1 + a2)).clamp(0, alpha_max)[:, None]
                moved = ((current.flatten(1) + eta * d_current) * (1 - alpha) + (flat + eta * d_origin) * alpha).clamp(
                    0, 1
                )
                candidate = moved.view(shape)
                fooled = model(candidate).argmax(1) != y
                ever |= fooled
                dist = distance(moved - flat, norm)
                closer = fooled & (dist < best_dist)
                best[closer], best_dist[closer] = candidate[closer], dist[closer]
                pulled = flat + (moved - flat) * beta
                current = torch.where(fooled[:, None], pulled, moved).view(shape)
                trace[i + 1] = -best_dist
            if on_step is not None:
                on_step()
        success = torch.isfinite(best_dist)
        if final_search_steps > 0 and bool(success.any()):
            idx = success.nonzero().squeeze(1)
            best[idx], best_dist[idx] = closest_on_segment(model, x[idx], y[idx], best[idx], final_search_steps, norm)
    return AttackOutcome(best, success, ever, trace, n * steps * 2 + n * final_search_steps), best_dist
