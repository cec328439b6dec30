"""The mask search: HYDRA's score optimization with S2AP's score-space sharpness minimization.

One step (Piras et al. 2025; the options: docs/concepts/algorithms.md):
1. craft ``x'`` at the current mask (PGD or TRADES, weights frozen);
2. ``g = grad_s L_rob(w * M(s, k); x')``;
3. ``z_l = gamma * ||s_l|| * g_l / (||g_l|| + 1e-12)`` for every layer;
4. ``g' = grad_s L_rob(w * M(s + z, k); x')`` on the same ``x'``;
5. restore ``s`` and step the optimizer with ``g'``.
With ``gamma = 0`` (HYDRA) and during the warm-up epochs, steps 2-4 are skipped and the
optimizer steps with ``grad_s L_rob(w * M(s, k); x')``: the same code path minus the ascent.

Cost: crafting ``x'`` (``steps`` forward/input-backward passes) dominates a step and is shared by
both loss evaluations, so the ascent adds one evaluation of the robust loss with its backward pass
and one top-k per step. That pass is the step's limit: with the default TRADES search loss it is
two forward passes and their backward (``benchmarks/s2ap_step_cost.py`` measures it alone, and the
S2AP/HYDRA step ratio beside it: on ResNet18 with PGD-10 the pass alone makes 1.24-1.26, and the
step measured 1.33 at batch 8 on a busy 2-core machine). With ``ascent_every = k > 1`` step 2 runs on
every k-th step of an epoch only; the steps in between perturb along the last ``g`` (rescaled to the
current ``||s_l||``), as in SAM variants that reuse the ascent direction (LookSAM, Liu et al. 2022),
and cost about what a HYDRA step costs (the perturbed pass takes the place of HYDRA's). ``k = 1`` is
the paper's step and the default.

The search's robust loss is its own (``search_loss``, TRADES with beta 6 by default, as HYDRA's
``trainer/adv.py``), independent of the fine-tuning's loss.

BatchNorm is in train mode during the search, as in HYDRA (its ``prune`` phase trains the scores
with ``model.train()``): batch statistics normalize, and the running statistics follow the
*masked* network, so the eval-mode model after the search is calibrated for the masks it ends
with. With ``train_bn`` (the default, as HYDRA's ``freeze_vars`` without ``--freeze-bn``) the
affine parameters of every BatchNorm are trained with the scores by the same optimizer; the ascent
perturbs the scores only, and the affine parameters step with the gradient taken at ``s + z``
(the gradient of the worst case, as SAM steps every trained parameter). The second (perturbed)
pass of an S2AP step restores the running statistics afterwards, so they track the model at
``s``, not ``s + z``.

Radius: a fixed ``gamma`` for every layer, or calibrated (``swap_fraction``): at the first step of
every ascent epoch each layer's gamma is solved from that step's ascent gradient so that one
ascent swaps the given fraction of its kept entries (:mod:`robprune_s2ap.radius`). Every ascent
measures the fraction it really swapped; the epoch logs its mean (``swap_fraction``), the radius
(``gamma``, ``gamma_min``, ``gamma_max`` over layers) and the perturbed-minus-clean loss
(``ascent_gain``), besides the probe's sharpness and top Hessian eigenvalue.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from robprune_deploy import NumericalError, PruningContext, distributed
from robprune_deploy.attacks import RobustLoss, craft_adversarial, loss_on_adversarial
from robprune_deploy.checkpoints import load_checkpoint, save_checkpoint
from robprune_deploy.progress import progress_bar
from robprune_deploy.training import epoch_seed
from robprune_s2ap.radius import calibrate_gammas, kept_entries, swapped_entries
from robprune_s2ap.scores import ScoreSet
from robprune_s2ap.sharpness import ascend_, sharpness, top_hessian_eigenvalue


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
    ascent_every: int = 1
    swap_fraction: float | None = None
    """Calibrated radius (``gamma`` is then ignored): the fraction of kept entries one ascent swaps."""
    search_loss: RobustLoss = RobustLoss.TRADES
    trades_beta: float = 6.0
    mart_beta: float = 6.0
    train_bn: bool = True

    @property
    def ascends(self) -> bool:
        """Whether any epoch takes S2AP's ascent (HYDRA's search does not)."""
        return self.swap_fraction is not None or self.gamma > 0


@dataclass
class SearchHistory:
    """Per-epoch measurements of a mask search."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    layer_sparsity: list[dict[str, float]] = field(default_factory=list)
    layer_gamma: list[dict[str, float]] = field(default_factory=list)
    sparsity_per_layer: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "layer_sparsity_per_epoch": self.layer_sparsity,
            "layer_gamma_per_epoch": self.layer_gamma,
            "sparsity_per_layer": self.sparsity_per_layer,
        }


HESSIAN_TOLERANCE = 1e-3
"""The power iteration stops once its estimate moves by less than this (relative): a measurement
compared across epochs and runs needs no more digits, and each iteration costs a double backward."""

SEARCH_CHECKPOINT = "prune_search_last.pt"
"""Per-epoch state of the mask search in ``context.checkpoint_dir`` (scores, optimizer, BN statistics)."""


def _fingerprint(settings: SearchSettings, context: PruningContext, score_set: ScoreSet) -> str:
    # A checkpoint of another search (other options, ratio, seed or layers) must not be resumed.
    shapes = ",".join(f"{n}:{tuple(v.scores.shape)}" for n, v in score_set.vectors.items())
    return f"{settings!r}|ratio={context.ratio}|seed={context.seed}|{shapes}"


def _hamming(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> int:
    return int(sum(int((a[k] != b[k]).sum()) for k in a))


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """Run a train-mode pass without letting it move any BatchNorm running statistic."""
    saved = [
        (buffer, buffer.detach().clone())
        for module in model.modules()
        if isinstance(module, _BatchNorm)
        for buffer in module.buffers()
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def search_objective(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, settings: SearchSettings
) -> torch.Tensor:
    """The search's robust loss on the crafted batch ``x_adv`` (``search_loss``, not the fine-tuning's)."""
    return loss_on_adversarial(model, x, y, x_adv, settings.search_loss, settings.trades_beta, settings.mart_beta)


def batchnorm_affine_parameters(model: nn.Module, scores: list[nn.Parameter]) -> list[nn.Parameter]:
    """The weight and bias of every affine BatchNorm (HYDRA's ``freeze_vars`` leaves these trainable).

    Under channel scores a BatchNorm's affine parameters are masked by its group's score vector:
    the trained tensor is then the parametrization's ``original``, and the (shared) scores that
    hang below the module are not BatchNorm's.
    """
    found: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.affine:
            found += [p for p in module.parameters() if all(p is not s for s in scores + found)]
    return found


@dataclass
class _EpochTotals:
    """What one epoch of the search sums, step by step, for its logged means."""

    loss: float = 0.0
    loss_steps: int = 0
    perturbed_loss: float = 0.0
    ascent_steps: int = 0
    fresh_ascents: int = 0
    gain: float = 0.0
    min_gain: float = math.inf
    swapped: float = 0.0
    step_seconds: list[float] = field(default_factory=list)
    step_cpu_seconds: list[float] = field(default_factory=list)

    def add(self, loss: float | None, perturbed: float | None) -> None:
        if loss is not None:
            self.loss += loss
            self.loss_steps += 1
        if perturbed is not None:
            self.perturbed_loss += perturbed
            self.ascent_steps += 1
            if loss is not None:
                self.min_gain = min(self.min_gain, perturbed - loss)
                self.gain += perturbed - loss


@dataclass
class _Ascent:
    """S2AP's ascent within one epoch: the last ascent gradient and the layers' radii. Both are reset
    every epoch, so a resumed search stays exact."""

    scores: list[nn.Parameter]
    score_set: ScoreSet
    settings: SearchSettings
    grads: list[torch.Tensor] | None = None
    gammas: list[float] | None = None

    def __post_init__(self) -> None:
        if self.settings.swap_fraction is None:  # fixed radius; calibrated ones are solved at the first ascent
            self.gammas = [self.settings.gamma] * len(self.scores)

    def step(
        self,
        model: nn.Module,
        net: nn.Module,
        batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        step: int,
        totals: _EpochTotals,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Steps 2-4 of the module docstring; returns the clean loss (when freshly computed) and the
        perturbed loss, whose gradient is left on the scores for the optimizer."""
        x, y, x_adv = batch
        settings, scores, score_set = self.settings, self.scores, self.score_set
        loss: torch.Tensor | None = None
        if self.grads is None or step % settings.ascent_every == 0:
            # The bare module: a gradient taken with autograd.grad must not go through DDP's
            # reducer; the ranks average it explicitly so every rank perturbs by the same z.
            loss = search_objective(model, x, y, x_adv, settings)
            raw = torch.autograd.grad(loss, scores, allow_unused=True)
            self.grads = [g if g is not None else torch.zeros_like(s) for g, s in zip(raw, scores, strict=True)]
            distributed.all_mean_(self.grads)
            totals.fresh_ascents += 1
        if self.gammas is None:
            assert settings.swap_fraction is not None
            self.gammas = calibrate_gammas(score_set, self.grads, settings.swap_fraction)
        saved = [s.detach().clone() for s in scores]
        before = [v.hard_mask() for v in score_set.vectors.values()]
        ascend_(scores, self.grads, self.gammas)  # radius from the current ||s_l||
        score_set.refresh()
        after = [v.hard_mask() for v in score_set.vectors.values()]
        totals.swapped += swapped_entries(before, after) / max(kept_entries(before), 1)
        # backward() inside: autograd saved the running statistics and checks their version.
        with frozen_batchnorm_statistics(model):
            perturbed = search_objective(net, x, y, x_adv, settings)
            perturbed.backward()
        with torch.no_grad():
            for s, value in zip(scores, saved, strict=True):
                s.copy_(value)  # exact restore (s + z - z is not s in floating point)
        return loss, perturbed


def _epoch_metrics(
    totals: _EpochTotals, ascent: _Ascent, flips: int, masks: dict[str, torch.Tensor], sparsity: float, lr: float
) -> dict[str, float]:
    metrics = {
        "robust_loss": totals.loss / max(totals.loss_steps, 1),
        "mask_flips": float(flips),
        "mask_flip_fraction": flips / max(sum(m.numel() for m in masks.values()), 1),
        "sparsity": sparsity,
        "step_seconds": statistics.fmean(totals.step_seconds) if totals.step_seconds else 0.0,
        # The median resists the stalls of a shared machine; compare algorithms' step costs with it.
        "step_seconds_median": statistics.median(totals.step_seconds) if totals.step_seconds else 0.0,
        # This process's CPU time (all its threads): what a busy machine's other jobs do not inflate.
        "step_cpu_seconds": statistics.fmean(totals.step_cpu_seconds) if totals.step_cpu_seconds else 0.0,
        "score_lr": lr,
        "ascent_steps": float(totals.ascent_steps),
        "fresh_ascent_steps": float(totals.fresh_ascents),
    }
    if totals.ascent_steps:
        assert ascent.gammas is not None
        metrics["perturbed_loss"] = totals.perturbed_loss / totals.ascent_steps
        metrics["min_ascent_gain"] = totals.min_gain
        metrics["ascent_gain"] = totals.gain / max(totals.fresh_ascents, 1)
        metrics["swap_fraction"] = totals.swapped / totals.ascent_steps
        metrics["gamma"] = statistics.fmean(ascent.gammas)
        metrics["gamma_min"], metrics["gamma_max"] = min(ascent.gammas), max(ascent.gammas)
    return metrics


def _check_finite(epoch: int, *losses: float | None) -> None:
    for observed in losses:
        if observed is not None and not math.isfinite(observed):
            raise NumericalError(
                f"prune: epoch {epoch + 1}: the mask-search loss became {observed} (lower compression.config.lr?)"
            )


def search_masks(
    model: nn.Module, score_set: ScoreSet, context: PruningContext, settings: SearchSettings
) -> SearchHistory:
    """Train the scores of ``score_set`` (and, with ``train_bn``, BatchNorm's affine parameters;
    everything else frozen) and return the history."""
    scores = list(score_set.parameters())
    trained = scores + (batchnorm_affine_parameters(model, scores) if settings.train_bn else [])
    frozen = [p for p in model.parameters() if all(p is not t for t in trained)]
    for p in frozen:
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    net = distributed.wrap(model, context.device)
    # One optimizer and one schedule for scores and affine parameters alike, as HYDRA's get_optimizer.
    optimizer = torch.optim.SGD(trained, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(settings.epochs, 1))
    history = SearchHistory()
    probe: tuple[torch.Tensor, torch.Tensor] | None = None
    env = distributed.current()
    checkpoint = context.checkpoint_dir / SEARCH_CHECKPOINT if context.checkpoint_dir is not None else None
    fingerprint = _fingerprint(settings, context, score_set)
    first_epoch = 0
    if context.resume and checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        if state.get("fingerprint") == fingerprint:
            # Every epoch reseeds torch and reshuffles from (seed, epoch) alone, so continuing after
            # the last completed epoch gives the uninterrupted search's scores exactly.
            model.load_state_dict(state["model"])  # scores (they live in the parametrizations) and BN statistics
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history.epochs, history.layer_sparsity = list(state["epochs"]), list(state["layer_sparsity"])
            history.layer_gamma = list(state.get("layer_gamma", []))
            probe = (state["probe_x"].to(context.device), state["probe_y"].to(context.device))
            score_set.refresh()
            first_epoch = int(state["epoch"]) + 1
    previous = score_set.masks()

    for epoch in range(first_epoch, settings.epochs):
        torch.manual_seed(epoch_seed(context.seed, "prune", epoch))
        ascend = settings.ascends and epoch >= settings.warmup_epochs
        model.train()
        totals = _EpochTotals()
        ascent = _Ascent(scores, score_set, settings)
        with progress_bar(f"mask search {epoch + 1}/{settings.epochs}", None, context.show_progress) as bar:
            for step, (x, y) in enumerate(context.epoch_batches(epoch)):
                if probe is None:
                    probe = (x.detach().clone(), y.detach().clone())
                start, cpu_start = time.perf_counter(), time.process_time()
                # The scores do not move while x' is crafted: compute each w * M(s, k) once, not per attack step.
                with parametrize.cached():
                    x_adv = craft_adversarial(model, x, y, context.threat, settings.search_loss)
                optimizer.zero_grad(set_to_none=True)
                perturbed: torch.Tensor | None = None
                if ascend:
                    loss, perturbed = ascent.step(model, net, (x, y, x_adv), step, totals)
                else:
                    loss = search_objective(net, x, y, x_adv, settings)
                    loss.backward()
                optimizer.step()
                score_set.refresh()
                # .item() also waits for an accelerator, so the step time is complete.
                loss_value = loss.item() if loss is not None else None
                perturbed_value = perturbed.item() if perturbed is not None else None
                _check_finite(epoch, loss_value, perturbed_value)
                totals.step_seconds.append(time.perf_counter() - start)
                totals.step_cpu_seconds.append(time.process_time() - cpu_start)
                totals.add(loss_value, perturbed_value)
                bar.advance(status=f"loss {totals.loss / max(totals.loss_steps, 1):.3f}")
        scheduler.step()
        current = score_set.masks()
        flips = _hamming(current, previous)
        previous = current
        sparsity, per_layer = score_set.sparsity()
        history.layer_sparsity.append(per_layer)
        metrics = _epoch_metrics(totals, ascent, flips, current, sparsity, optimizer.param_groups[0]["lr"])
        gammas = ascent.gammas if totals.ascent_steps else None
        history.layer_gamma.append(dict(zip(score_set.vectors, gammas, strict=True)) if gammas is not None else {})
        assert probe is not None
        metrics.update(_measure(model, score_set, context, settings, probe, epoch))
        history.epochs.append({"epoch": float(epoch), **metrics})
        if checkpoint is not None and env.is_main:
            save_checkpoint(
                {
                    "fingerprint": fingerprint,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epochs": history.epochs,
                    "layer_sparsity": history.layer_sparsity,
                    "layer_gamma": history.layer_gamma,
                    "probe_x": probe[0].cpu(),
                    "probe_y": probe[1].cpu(),
                },
                checkpoint,
            )
        distributed.barrier()  # no rank runs ahead of the checkpoint it may have to resume from
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

    Measured the same way for HYDRA and S2AP so their sharpness is comparable. BatchNorm normalizes
    with batch statistics, as in the search objective: running statistics follow a mask that moved
    during the epoch, and a perturbed mask in eval mode is normalized with statistics of another
    network, which measures the statistics' mismatch rather than the loss landscape (at channel
    granularity it reached thousands of nats). No running statistic moves, and dropout is off.
    """
    x, y = probe
    scores = list(score_set.parameters())
    was_training = model.training

    def batch_statistics_mode() -> None:
        model.eval()
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                module.train()

    def loss_fn() -> torch.Tensor:
        score_set.refresh()
        return search_objective(model, x, y, x_adv, settings)

    result: dict[str, float] = {}
    with frozen_batchnorm_statistics(model):
        batch_statistics_mode()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch_seed(context.seed, "sharpness", 0))
            x_adv = craft_adversarial(model, x, y, context.threat, settings.search_loss)
        # TRADES and MART craft in eval mode and then set every module to the root's mode (eval).
        batch_statistics_mode()
        sharp, base = sharpness(loss_fn, scores, settings.measure_radius)
        result["sharpness"] = sharp
        result["probe_loss"] = base
        if settings.hessian_eigenvalue:
            estimate = top_hessian_eigenvalue(loss_fn, scores, settings.hessian_iterations, epoch, HESSIAN_TOLERANCE)
            result["hessian_top_eigenvalue"] = estimate.value
            result["hessian_converged"] = float(estimate.converged)
            result["hessian_power_iterations"] = float(estimate.iterations)
    score_set.refresh()
    model.train(was_training)
    return result
