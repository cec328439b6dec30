"""Clean and PGD accuracy of torch models, and BatchNorm recalibration."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from robprune_deploy.attacks import ThreatModel, pgd

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def accuracy(model: nn.Module, batches: Batches, device: torch.device, threat: ThreatModel | None = None) -> float:
    """Top-1 accuracy in eval mode, on clean inputs or on PGD examples of ``threat``."""
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            if threat is not None:
                x = pgd(model, x, y, threat)
            with torch.no_grad():
                correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    return correct / max(total, 1)


def evaluate_robustness(
    model: nn.Module, batches: Batches, device: torch.device, threat: ThreatModel, seed: int = 0
) -> dict[str, float]:
    """``{"clean_acc", "pgd_acc"}`` on ``batches``; PGD's random start is seeded for repeatability."""
    batches = list(batches)
    clean = accuracy(model, batches, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        robust = accuracy(model, batches, device, threat)
    return {"clean_acc": clean, "pgd_acc": robust}


def recalibrate_batchnorm(model: nn.Module, batches: Batches, device: torch.device, max_batches: int) -> nn.Module:
    """Re-estimate BatchNorm running statistics (cumulative average) on up to ``max_batches`` batches."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or max_batches <= 0:
        return model
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    was_training = model.training
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(batches):
            if i >= max_batches:
                break
            model(x.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return model
