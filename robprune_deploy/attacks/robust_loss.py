"""Robust training objectives: PGD adversarial training (Madry et al.) and TRADES (Zhang et al.).

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


def craft_adversarial(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, kind: RobustLoss
) -> torch.Tensor:
    """The inner maximization of ``kind``.

    PGD-AT maximizes cross-entropy with the model in the caller's mode (as Madry et al. and Rice
    et al. train). TRADES maximizes ``KL(f(x) || f(x'))`` in eval mode from a small Gaussian start,
    as the reference implementation does.
    """
    if kind is RobustLoss.PGD_AT:
        return pgd(model, x, y, threat)
    was_training = model.training
    model.eval()
    try:
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
) -> torch.Tensor:
    """The outer loss of ``kind`` given the crafted batch ``x_adv``."""
    logits_adv = model(x_adv)
    if kind is RobustLoss.PGD_AT:
        return F.cross_entropy(logits_adv, y)
    logits_clean = model(x)
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
    return F.cross_entropy(logits_clean, y) + trades_beta * robust


def robust_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    kind: RobustLoss = RobustLoss.PGD_AT,
    trades_beta: float = 6.0,
) -> torch.Tensor:
    """Craft ``x'`` for ``kind`` and return the robust loss of the batch."""
    x_adv = craft_adversarial(model, x, y, threat, kind)
    return loss_on_adversarial(model, x, y, x_adv, kind, trades_beta)


def trades_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, beta: float = 6.0
) -> torch.Tensor:
    """TRADES: ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` with ``x'`` maximizing the KL term."""
    return robust_loss(model, x, y, threat, RobustLoss.TRADES, beta)
