"""Auto-PGD, L-inf and L2 (Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020, Algorithm 1).

PGD without a step-size parameter: the step starts at ``2 eps`` and is halved at checkpoints
``w_j`` (``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` of the
budget) when the loss rose on fewer than ``rho`` of the steps since the last checkpoint, or when
neither the step nor the best loss changed; each halving restarts from the best point found. A
momentum term (``alpha = 0.75``) mixes the last two iterates. Losses: cross-entropy (APGD-CE),
untargeted DLR, targeted DLR (APGD-T), or the targeted margin, which stands in for targeted DLR on
models of fewer than four classes (:mod:`robprune_deploy.attacks.losses`).

The L2 version is the reference code's (fra31/auto-attack, ``autopgd_base.py``, ``norm='L2'``):
the same step-size schedule from ``2 eps``, steps along the L2-normalized gradient, a Gaussian
random start on the sphere of radius ``eps``, and each iterate (before and after the momentum mix)
rescaled onto the L2 ball and clipped into [0, 1] (:mod:`robprune_deploy.attacks.norms`).

Examples are attacked independently (per-example step sizes and checkpoints), so an example is
dropped from the batch as soon as it is misclassified: the others' trajectories do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from robprune_deploy.attacks.losses import cross_entropy, dlr, dlr_targeted, margin_targeted
from robprune_deploy.attacks.norms import Norm, check_norm, project, random_start, steepest_step
from robprune_deploy.attacks.outcome import AttackOutcome, frozen_parameters
from robprune_deploy.attacks.pgd import _autocast

ApgdLoss = Literal["ce", "dlr", "dlr-targeted", "margin-targeted"]
MOMENTUM = 0.75


def _checkpoint_lengths(steps: int) -> tuple[int, int, int]:
    """First interval, shortest interval and the decrement between intervals, in steps."""
    return max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 100,
    loss: ApgdLoss = "ce",
    target: torch.Tensor | None = None,
    rho: float = 0.75,
    norm: Norm = "linf",
    generator: torch.Generator | None = None,
    bf16: bool = False,
    on_step: Callable[[], None] | None = None,
) -> AttackOutcome:
    """Run APGD on ``model`` (eval mode; inputs in [0, 1]) against labels ``y``.

    :param loss: ``ce`` (APGD-CE), ``dlr`` (at least three classes), ``dlr-targeted`` (APGD-T; at
        least four classes) or ``margin-targeted`` (APGD-T below four classes); the targeted
        losses need ``target``.
    :param norm: the threat model, ``linf`` or ``l2`` (a ball of radius ``eps`` in that norm).
    :param generator: seeds the random start.
    :param on_step: called after every step (progress bars).
    """
    if loss.endswith("-targeted") and target is None:
        raise ValueError(f"APGD with the {loss} loss needs target labels")
    norm = check_norm(norm)
    generator = generator or torch.Generator().manual_seed(0)
    n = len(x)
    x = x.detach()

    def objective(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if loss == "ce":
            return cross_entropy(logits, y[idx])
        if loss == "dlr":
            return dlr(logits, y[idx])
        assert target is not None
        if loss == "margin-targeted":
            return margin_targeted(logits, y[idx], target[idx])
        return dlr_targeted(logits, y[idx], target[idx])

    def evaluate(idx: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        points = points.clone().requires_grad_(True)
        with _autocast(points, bf16):
            logits = model(points).float()
        values = objective(logits, idx)
        (grad,) = torch.autograd.grad(values.sum(), points)
        return logits.detach(), values.detach(), grad.detach()

    with frozen_parameters(model):
        everyone = torch.arange(n, device=x.device)
        x_adv = random_start(x, eps, norm, generator)
        logits, current, grad = evaluate(everyone, x_adv)
        success = logits.argmax(1) != y
        ever = success.clone()
        x_best_adv = torch.where(success.view(-1, *[1] * (x.dim() - 1)), x_adv, x)
        best, x_best, grad_best = current.clone(), x_adv.clone(), grad.clone()
        trace = torch.empty(steps + 1, n, device=x.device)
        trace[0] = best
        step = torch.full((n,), 2.0 * eps, device=x.device)
        x_prev = x_adv.clone()
        interval, shortest, decrement = _checkpoint_lengths(steps)
        since_check, rises = 0, torch.zeros(n, device=x.device)
        best_at_check, halved_at_check = best.clone(), torch.ones(n, dtype=torch.bool, device=x.device)
        evals = n
        shape = (-1, *[1] * (x.dim() - 1))
        for i in range(steps):
            idx = (~success).nonzero().squeeze(1)
            if idx.numel() > 0:
                xa, xp = x_adv[idx], x_prev[idx]
                s = step[idx].view(shape)
                ball = x[idx]
                z = project(xa + s * steepest_step(grad[idx], norm), ball, eps, norm)
                a = 1.0 if i == 0 else MOMENTUM
                new = project(xa + a * (z - xa) + (1 - a) * (xa - xp), ball, eps, norm)
                x_prev[idx], x_adv[idx] = xa, new
                logits, values, g = evaluate(idx, new)
                evals += idx.numel()
                grad[idx] = g
                fooled = logits.argmax(1) != y[idx]
                success[idx] |= fooled
                ever[idx] |= fooled
                x_best_adv[idx[fooled]] = new[fooled]
                rises[idx] += (values > current[idx]).float()
                current[idx] = values
                better = values > best[idx]
                up = idx[better]
                best[up], x_best[up], grad_best[up] = values[better], new[better], g[better]
            trace[i + 1] = best
            since_check += 1
            if since_check == interval:
                oscillating = rises <= interval * rho
                stalled = ~halved_at_check & (best_at_check >= best)
                halve = (oscillating | stalled) & ~success
                step[halve] /= 2.0
                x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
                halved_at_check, best_at_check = halve, best.clone()
                rises.zero_()
                since_check, interval = 0, max(interval - decrement, shortest)
            if on_step is not None:
                on_step()
    returned = torch.where(success.view(shape), x_best_adv, x_best)
    return AttackOutcome(returned.detach(), success, ever, trace, evals)
