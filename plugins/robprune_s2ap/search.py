"""The mask search: HYDRA's score optimization with S2AP's score-space sharpness minimization.

One step (ALGORITHMS.md):
1. craft ``x'`` at the current mask (PGD or TRADES, weights frozen);
2. ``g = grad_s L_rob(w * M(s, k); x')``;
3. ``z_l = gamma * ||s_l|| * g_l / (||g_l|| + 1e-12)`` for every layer;
4. ``g' = grad_s L_rob(w * M(s + z, k); x')`` on the same ``x'``;
5. restore ``s`` and step the optimizer with ``g'``.
With ``gamma = 0`` (HYDRA) and during the warm-up epochs, steps 2-4 are skipped and the
optimizer steps with ``grad_s L_rob(w * M(s, k); x')``: the same code path minus the ascent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robprune_deploy import PruningContext, distributed
from robprune_deploy.attacks import craft_adversarial, loss_on_adversarial
from robprune_deploy.progress import progress_bar
from robprune_deploy.training import epoch_seed
from robprune_s2ap.scores import ScoreSet
from robprune_s2ap.sharpness import ascent_direction, sharpness, top_hessian_eigenvalue


@dataclass(frozen=True)
class SearchSettings:
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    gamma: float
    warmup_epochs: int
    measure_radius: float
    hessian_eigenvalue: bool
    hessian_iterations: int


@dataclass
class SearchHistory:
    """Per-epoch measurements of a mask search."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    sparsity_per_layer: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "sparsity_per_layer": self.sparsity_per_layer}


def _hamming(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> int:
    return int(sum(int((a[k] != b[k]).sum()) for k in a))


def search_masks(
    model: nn.Module, score_set: ScoreSet, context: PruningContext, settings: SearchSettings
) -> SearchHistory:
    """Train the scores of ``score_set`` (everything else frozen) and return the history."""
    scores = list(score_set.parameters())
    frozen = [p for p in model.parameters() if all(p is not s for s in scores)]
    for p in frozen:
        p.requires_grad_(False)
    for s in scores:
        s.requires_grad_(True)
    net = distributed.wrap(model, context.device)
    optimizer = torch.optim.SGD(scores, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(settings.epochs, 1))
    history = SearchHistory()
    previous = score_set.masks()
    probe: tuple[torch.Tensor, torch.Tensor] | None = None
    env = distributed.current()

    for epoch in range(settings.epochs):
        torch.manual_seed(epoch_seed(context.seed, "prune", epoch))
        ascend = settings.gamma > 0 and epoch >= settings.warmup_epochs
        model.train()
        totals = {"loss": 0.0, "perturbed_loss": 0.0, "steps": 0.0, "ascent_steps": 0.0, "seconds": 0.0}
        totals["min_ascent_gain"] = float("inf")
        batches = context.epoch_batches(epoch)
        with progress_bar(f"mask search {epoch + 1}/{settings.epochs}", None, context.show_progress) as bar:
            for x, y in batches:
                if probe is None:
                    probe = (x.detach().clone(), y.detach().clone())
                start = time.perf_counter()
                x_adv = craft_adversarial(model, x, y, context.threat, context.loss)
                loss = loss_on_adversarial(net, x, y, x_adv, context.loss, context.trades_beta)
                optimizer.zero_grad(set_to_none=True)
                if ascend:
                    grads = torch.autograd.grad(loss, scores, allow_unused=True)
                    grads = tuple(
                        g if g is not None else torch.zeros_like(s) for g, s in zip(grads, scores, strict=True)
                    )
                    z = ascent_direction(scores, list(grads), settings.gamma)
                    with torch.no_grad():
                        for s, dz in zip(scores, z, strict=True):
                            s.add_(dz)
                    score_set.refresh()
                    perturbed = loss_on_adversarial(net, x, y, x_adv, context.loss, context.trades_beta)
                    perturbed.backward()
                    with torch.no_grad():
                        for s, dz in zip(scores, z, strict=True):
                            s.sub_(dz)
                    totals["perturbed_loss"] += perturbed.item()
                    totals["ascent_steps"] += 1
                    totals["min_ascent_gain"] = min(totals["min_ascent_gain"], perturbed.item() - loss.item())
                else:
                    loss = loss_on_adversarial(net, x, y, x_adv, context.loss, context.trades_beta)
                    loss.backward()
                optimizer.step()
                score_set.refresh()
                totals["seconds"] += time.perf_counter() - start
                totals["loss"] += loss.item()
                totals["steps"] += 1
                bar.advance(status=f"loss {totals['loss'] / totals['steps']:.3f}")
        scheduler.step()
        current = score_set.masks()
        flips = _hamming(current, previous)
        previous = current
        metrics = {
            "robust_loss": totals["loss"] / max(totals["steps"], 1),
            "mask_flips": float(flips),
            "mask_flip_fraction": flips / max(sum(m.numel() for m in current.values()), 1),
            "step_seconds": totals["seconds"] / max(totals["steps"], 1),
            "score_lr": optimizer.param_groups[0]["lr"],
        }
        metrics["ascent_steps"] = totals["ascent_steps"]
        if totals["ascent_steps"]:
            metrics["perturbed_loss"] = totals["perturbed_loss"] / totals["ascent_steps"]
            metrics["min_ascent_gain"] = totals["min_ascent_gain"]
        assert probe is not None
        metrics.update(_measure(model, score_set, context, settings, probe, epoch))
        history.epochs.append({"epoch": float(epoch), **metrics})
        if env.is_main:
            context.log_epoch("prune", epoch, metrics)
    distributed.broadcast_state(model)
    for p in frozen:
        p.requires_grad_(True)
    return history


def _measure(
    model: nn.Module,
    score_set: ScoreSet,
    context: PruningContext,
    settings: SearchSettings,
    probe: tuple[torch.Tensor, torch.Tensor],
    epoch: int,
) -> dict[str, float]:
    """Sharpness at ``measure_radius`` (and optionally the Hessian's top eigenvalue) on a fixed batch.

    Measured the same way for HYDRA and S2AP so their sharpness is comparable; BatchNorm is put in
    eval mode so the measurement itself changes no running statistic.
    """
    x, y = probe
    scores = list(score_set.parameters())
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(epoch_seed(context.seed, "sharpness", 0))
        x_adv = craft_adversarial(model, x, y, context.threat, context.loss)

    def loss_fn() -> torch.Tensor:
        score_set.refresh()
        return loss_on_adversarial(model, x, y, x_adv, context.loss, context.trades_beta)

    result: dict[str, float] = {}
    sharp, base = sharpness(loss_fn, scores, settings.measure_radius)
    result["sharpness"] = sharp
    result["probe_loss"] = base
    if settings.hessian_eigenvalue:
        result["hessian_top_eigenvalue"] = top_hessian_eigenvalue(loss_fn, scores, settings.hessian_iterations, epoch)
    score_set.refresh()
    model.train(was_training)
    return result
