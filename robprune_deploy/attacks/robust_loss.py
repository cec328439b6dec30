"""Robust training objectives: PGD adversarial training (Madry et al.), TRADES (Zhang et al.) and
MART (Wang et al. 2020, "Improving Adversarial Robustness Requires Revisiting Misclassified Examples").

Each objective is split in two so that an algorithm can reuse one adversarial batch for several
loss evaluations (S2AP evaluates the loss at ``s`` and at ``s + z`` on the same ``x'``):
:func:`craft_adversarial` finds ``x'`` and :func:`loss_on_adversarial` scores the model on it.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from robprune_deploy.attacks.pgd import ThreatModel, pgd


class RobustLoss(str, Enum):
    PGD_AT = "pgd_at"
    TRADES = "trades"
    MART = "mart"


MART_EPS = 1e-12
"""MART's reference implementation adds these inside its logarithms (``log(1.0001 - p)``, ``log(p + 1e-12)``)."""


def craft_adversarial(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, kind: RobustLoss
) -> torch.Tensor:
    """The inner maximization of ``kind``.

    PGD-AT maximizes cross-entropy with the model in the caller's mode (as Madry et al. and Rice
    et al. train). TRADES maximizes ``KL(f(x) || f(x'))`` in eval mode from a small Gaussian start,
    as the reference implementation does. MART maximizes cross-entropy in eval mode from the same
    small Gaussian start, as its reference implementation does.
    """
    if kind is RobustLoss.PGD_AT:
        return pgd(model, x, y, threat)
    was_training = model.training
    model.eval()
    try:
        if kind is RobustLoss.MART:
            start = (x + 0.001 * torch.randn_like(x)).clamp(0, 1) if threat.random_start else x
            inner = ThreatModel(threat.eps, threat.step_size, threat.steps, random_start=False, bf16=threat.bf16)
            x_adv = pgd(model, start, y, inner)
            return torch.min(torch.max(x_adv, x - threat.eps), x + threat.eps).clamp(0, 1)
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)

        def kl(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            return F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="batchmean")

        start = (x + 0.001 * torch.randn_like(x)).clamp(0, 1) if threat.random_start else x
        inner = ThreatModel(threat.eps, threat.step_size, threat.steps, random_start=False, bf16=threat.bf16)
        x_adv = pgd(model, start, y, inner, loss_fn=kl)
        return torch.min(torch.max(x_adv, x - threat.eps), x + threat.eps).clamp(0, 1)
    finally:
        model.train(was_training)


def loss_on_adversarial(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    kind: RobustLoss,
    trades_beta: float = 6.0,
    mart_beta: float = 6.0,
) -> torch.Tensor:
    """The outer loss of ``kind`` given the crafted batch ``x_adv``."""
    return loss_and_adversarial_logits(model, x, y, x_adv, kind, trades_beta, mart_beta)[0]


def loss_and_adversarial_logits(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    kind: RobustLoss,
    trades_beta: float = 6.0,
    mart_beta: float = 6.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(outer loss of kind, model(x_adv))``: the logits the loss was computed from, so a trainer
    reads its robust training accuracy off them instead of running the network again."""
    logits_adv = model(x_adv)
    if kind is RobustLoss.PGD_AT:
        return F.cross_entropy(logits_adv, y), logits_adv
    logits_clean = model(x)
    if kind is RobustLoss.MART:
        return mart_objective(logits_clean, logits_adv, y, mart_beta), logits_adv
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
    return F.cross_entropy(logits_clean, y) + trades_beta * robust, logits_adv


def mart_objective(
    logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float = 6.0
) -> torch.Tensor:
    """MART's outer loss, batch mean of

    ``BCE(p(x'), y) + beta * KL(p(x) || p(x')) * (1 - p_y(x))`` with
    ``BCE(p', y) = -log p'_y - log(1 - max_{k != y} p'_k)``:

    the boosted cross-entropy also pushes down the strongest wrong class, and the KL term weighs
    the misclassified (low ``p_y(x)``) examples more. The weight is not detached, as in the
    reference implementation.
    """
    p_adv = F.softmax(logits_adv, dim=1)
    p_clean = F.softmax(logits_clean, dim=1)
    wrong = p_adv.masked_fill(F.one_hot(y, p_adv.shape[1]).bool(), -1.0)
    runner_up = wrong.max(dim=1).values
    boosted = F.cross_entropy(logits_adv, y) - torch.log(1.0001 - runner_up + MART_EPS).mean()
    kl = F.kl_div(torch.log(p_adv + MART_EPS), p_clean, reduction="none").sum(dim=1)
    true_clean = p_clean.gather(1, y.unsqueeze(1)).squeeze(1)
    return boosted + beta * (kl * (1.0000001 - true_clean)).mean()


def robust_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    kind: RobustLoss = RobustLoss.PGD_AT,
    trades_beta: float = 6.0,
    mart_beta: float = 6.0,
) -> torch.Tensor:
    """Craft ``x'`` for ``kind`` and return the robust loss of the batch."""
    x_adv = craft_adversarial(model, x, y, threat, kind)
    return loss_on_adversarial(model, x, y, x_adv, kind, trades_beta, mart_beta)


def trades_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, beta: float = 6.0
) -> torch.Tensor:
    """TRADES: ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` with ``x'`` maximizing the KL term."""
    return robust_loss(model, x, y, threat, RobustLoss.TRADES, beta)


def mart_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, beta: float = 6.0
) -> torch.Tensor:
    """MART: CE-PGD examples ``x'`` scored by :func:`mart_objective`."""
    return robust_loss(model, x, y, threat, RobustLoss.MART, mart_beta=beta)
