"""Adversarial training: PGD-AT, TRADES or MART, optionally with adversarial weight perturbation
(AWP, :mod:`robprune_deploy.training.awp`) or with FGSM-RS in place of PGD (fast adversarial training,
:mod:`robprune_deploy.training.fast_at`); SGD with momentum (or AdamW), cosine learning-rate schedule.

Training is resumable and deterministic: each epoch reseeds torch from ``(seed, stage, epoch)`` and
the data order depends only on ``(seed, epoch)``, so an interrupted run resumed from its last
per-epoch checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import math
import zlib
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robprune_deploy import distributed
from robprune_deploy.attacks import RobustLoss, ThreatModel, craft_adversarial, loss_and_adversarial_logits
from robprune_deploy.checkpoints import load_checkpoint, save_checkpoint
from robprune_deploy.errors import NumericalError
from robprune_deploy.progress import ProgressBar, progress_bar
from robprune_deploy.training.awp import AWPPlan, WeightPerturbation, perturb_weights
from robprune_deploy.training.fast_at import CollapseGuard, FastATPlan, OnCollapse

logger = logging.getLogger(__name__)

EpochLoader = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]
EpochEnd = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainingPlan:
    """Hyper-parameters of one adversarial training stage."""

    epochs: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss: RobustLoss = RobustLoss.PGD_AT
    trades_beta: float = 6.0
    eps_warmup_epochs: int = 0
    mart_beta: float = 6.0
    optimizer: str = "sgd"
    awp: AWPPlan | None = None
    """Adversarial weight perturbation on top of ``loss`` (its ascent uses ``loss``'s outer loss)."""
    fast: FastATPlan | None = None
    """Craft with FGSM-RS instead of the threat's PGD (``loss`` must be PGD-AT)."""
    channels_last: bool = False
    """Train in the channels-last (NHWC) memory layout: faster convolutions on CPU for the small CNNs
    measured (``benchmarks/at_throughput.py``); the arithmetic's order changes, not the algorithm."""

    def __post_init__(self) -> None:
        if self.fast is not None and self.loss is not RobustLoss.PGD_AT:
            raise ValueError(f"fast adversarial training (FGSM-RS) replaces PGD-AT's attack, not {self.loss.value}'s")

    def threat_at(self, threat: ThreatModel, epoch: int) -> ThreatModel:
        """The threat of ``epoch``: eps (and step) ramp up linearly over the warm-up epochs.

        Starting at full radius on a randomly initialized network often stalls training at chance
        level for several epochs; a short ramp is the usual cure (e.g. Wong et al. 2020).
        """
        if epoch >= self.eps_warmup_epochs:
            return threat
        scale = (epoch + 1) / (self.eps_warmup_epochs + 1)
        return ThreatModel(threat.eps * scale, threat.step_size * scale, threat.steps, threat.random_start, threat.bf16)


def check_batch(x: torch.Tensor, stage: str, epoch: int) -> None:
    """:raises NumericalError: naming ``stage`` and ``epoch`` (0-based, shown 1-based) when ``x`` holds NaN/inf."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise NumericalError(f"{stage}: epoch {epoch + 1}: an input batch holds NaN or inf")


def check_finite_state(model: nn.Module, where: str) -> None:
    """:raises NumericalError: naming ``where`` and the first weight or statistic holding NaN/inf."""
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NumericalError(f"{where}: {key} holds NaN or inf")


@dataclass(frozen=True)
class StepResult:
    """One optimizer step's loss and its count of adversarial examples classified correctly."""

    loss: float
    correct: int


def train_step(
    model: nn.Module,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: TrainingPlan,
    threat: ThreatModel,
    epoch: int,
) -> StepResult:
    """Craft ``x'`` against ``threat`` on ``model`` and take one optimizer step on ``net`` (``model``
    or its DDP wrapper).

    The robust accuracy is read off the logits the loss was computed from (before the step, as the
    reference implementations of PGD-AT and fast AT count it): no extra forward pass, which also
    leaves BatchNorm's running statistics one update fewer per step than a separate pass would.
    TRADES crafts for the KL term, so its count is 0. A non-finite loss skips the step (the caller
    raises).
    """
    x_adv = craft_adversarial(model, x, y, threat, plan.loss)
    perturbation = (
        perturb_weights(model, x, y, x_adv, plan.loss, plan.awp.gamma, plan.trades_beta, plan.mart_beta)
        if plan.awp is not None and plan.awp.active(epoch)
        else WeightPerturbation([], [])
    )
    try:
        loss, logits = loss_and_adversarial_logits(net, x, y, x_adv, plan.loss, plan.trades_beta, plan.mart_beta)
        value = loss.item()
        if math.isfinite(value):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        perturbation.restore()  # the step was taken at w + gamma * v; w keeps only the step
    correct = int((logits.detach().argmax(1) == y).sum()) if plan.loss is not RobustLoss.TRADES else 0
    return StepResult(value, correct)


@dataclass
class EpochSelection:
    """Keep the weights of the epoch where ``metric`` (a key of ``evaluate``'s result) is highest.

    :func:`adversarial_train` fills in ``epoch`` (zero-based) and ``value`` of the weights it kept;
    ties keep the earlier epoch. Selecting on validation PGD accuracy is the early stopping of
    Rice et al. (2020) against robust overfitting.
    """

    metric: str
    epoch: int = -1
    value: float = float("-inf")


def make_optimizer(plan: TrainingPlan, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with momentum (CNNs), or AdamW: vision transformers trained from scratch with SGD stay at
    chance level on the digits (measured: 6 clean epochs, ViT 23% with SGD, 76% with AdamW)."""
    if plan.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=plan.lr, weight_decay=plan.weight_decay)
    return torch.optim.SGD(params, lr=plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay)


def epoch_seed(seed: int, stage: str, epoch: int) -> int:
    """A seed that depends only on the run seed, the stage name and the epoch."""
    return (seed * 1_000_003 + zlib.crc32(stage.encode()) + epoch * 7919) % (2**31 - 1)


def _length(batches: Iterable[object]) -> int | None:
    return len(batches) if isinstance(batches, Sized) else None


def _train_epoch(
    model: nn.Module,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    plan: TrainingPlan,
    attack_threat: ThreatModel,
    epoch: int,
    stage: str,
    device: torch.device,
    bar: ProgressBar,
) -> tuple[float, float, float]:
    """One epoch of training steps on this rank: the summed loss (per example), correct and seen."""
    loss_sum, correct, seen = 0.0, 0.0, 0.0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if plan.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        check_batch(x, stage, epoch)
        step = train_step(model, net, optimizer, x, y, plan, attack_threat, epoch)
        if not math.isfinite(step.loss):
            raise NumericalError(
                f"{stage}: epoch {epoch + 1}: the training loss became {step.loss} "
                f"(lr {plan.lr:g}; a smaller {stage}.lr usually cures it)"
            )
        correct += step.correct
        loss_sum += step.loss * len(y)
        seen += len(y)
        bar.advance(status=f"loss {loss_sum / seen:.3f}")
    return loss_sum, correct, seen


def adversarial_train(
    model: nn.Module,
    plan: TrainingPlan,
    threat: ThreatModel,
    epoch_loader: EpochLoader,
    *,
    device: torch.device,
    stage: str = "train",
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_epoch_end: EpochEnd | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    select: EpochSelection | None = None,
    show_progress: bool = True,
    guard: CollapseGuard | None = None,
) -> nn.Module:
    """Train every parameter of ``model`` that requires grad against ``threat``.

    :param epoch_loader: ``epoch -> batches``; called once per epoch.
    :param checkpoint_dir: ``<dir>/<stage>_last.pt`` is written atomically after every epoch.
    :param resume: continue from that checkpoint when it exists.
    :param evaluate: optional ``model -> metrics`` run after each epoch (e.g. validation clean/PGD acc).
    :param select: keep the weights of the best epoch by one of ``evaluate``'s metrics (filled in;
        ``<dir>/<stage>_best.pt`` holds them across a resume); ``None`` keeps the last epoch's.
    :param guard: with ``plan.fast``, watches every FGSM-RS epoch for catastrophic overfitting
        (filled in; ``<dir>/<stage>_fast_best.pt`` holds its best epoch's state across a resume).
    :returns: ``model``, trained in place.

    Under ``torchrun`` the loss goes through a DistributedDataParallel wrapper (gradients are
    averaged across ranks), while attacks are crafted on the bare module: they need no gradient
    synchronization, and running them through DDP would arm its reducer for a backward that
    never comes. Only rank 0 writes checkpoints.
    """
    env = distributed.current()
    model.to(device)
    if plan.channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(plan, params)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(plan.epochs, 1))
    if select is not None and evaluate is None:
        raise ValueError("select needs evaluate: the metric is one of its results")
    start = 0
    checkpoint = checkpoint_dir / f"{stage}_last.pt" if checkpoint_dir is not None else None
    best_file = checkpoint_dir / f"{stage}_best.pt" if checkpoint_dir is not None else None
    best_state: dict[str, torch.Tensor] | None = None
    fast_file = checkpoint_dir / f"{stage}_fast_best.pt" if checkpoint_dir is not None else None
    watch = guard if plan.fast is not None else None
    # The guard's best epoch so far; before the first one, the weights training started from.
    fast_best = _train_state(model, optimizer) if watch is not None else None
    stopped = False
    if resume and checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["epoch"]) + 1
        if select is not None and int(state.get("selected_epoch", -1)) >= 0 and best_file is not None:
            select.epoch, select.value = int(state["selected_epoch"]), float(state["selected_value"])
            best_state = load_checkpoint(best_file)["model"]
        if watch is not None and "fast_guard" in state:
            watch.load_state(state["fast_guard"])
            stopped = bool(state["fast_stopped"])
            if watch.best_epoch >= 0 and fast_file is not None:
                fast_best = load_checkpoint(fast_file)
    last_epoch = start - 1  # the last epoch trained (an early stop ends before plan.epochs - 1)
    for epoch in range(start, plan.epochs):
        if stopped:
            break
        last_epoch = epoch
        torch.manual_seed(epoch_seed(seed, stage, epoch))
        epoch_threat = plan.threat_at(threat, epoch)
        # FGSM-RS until the guard (if any) sees a collapse, PGD from then on.
        fast_epoch = plan.fast is not None and (watch is None or watch.collapsed_epoch < 0)
        attack_threat = plan.fast.threat(epoch_threat) if plan.fast is not None and fast_epoch else epoch_threat
        net.train()
        batches = epoch_loader(epoch)
        with progress_bar(f"{stage} {epoch + 1}/{plan.epochs}", _length(batches), show_progress) as bar:
            loss_sum, correct, seen = _train_epoch(
                model, net, optimizer, batches, plan, attack_threat, epoch, stage, device, bar
            )
        scheduler.step()
        check_finite_state(model, f"{stage}: epoch {epoch + 1}")
        loss_sum, correct, seen = distributed.all_sum([loss_sum, correct, seen], device)
        metrics = {"loss": loss_sum / max(seen, 1), "lr": optimizer.param_groups[0]["lr"]}
        if plan.loss is not RobustLoss.TRADES:  # PGD-AT and MART craft cross-entropy attacks
            metrics["train_adv_acc"] = correct / max(seen, 1)
        if watch is not None and fast_epoch:
            assert fast_best is not None
            fast_best, stopped = _guard_epoch(watch, model, optimizer, epoch, metrics, fast_best, device)
            if watch.best_epoch == epoch and fast_file is not None and env.is_main:
                save_checkpoint(fast_best, fast_file)
        if evaluate is not None:  # after a collapse: the restored weights, the ones training goes on with
            metrics.update(evaluate(model))
        if select is not None and metrics[select.metric] > select.value:
            select.epoch, select.value = epoch, metrics[select.metric]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if best_file is not None and env.is_main:  # before the last checkpoint that points at it
                save_checkpoint({"epoch": epoch, "model": best_state}, best_file)
        if checkpoint is not None and env.is_main:
            state = {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                **({"selected_epoch": select.epoch, "selected_value": select.value} if select is not None else {}),
                **({"fast_guard": watch.state(), "fast_stopped": stopped} if watch is not None else {}),
            }
            save_checkpoint(state, checkpoint)
        distributed.barrier()  # no rank runs ahead of the checkpoint it may have to resume from
        if on_epoch_end is not None and env.is_main:
            on_epoch_end(epoch, metrics)
    if best_state is not None and select is not None and select.epoch != last_epoch:
        model.load_state_dict(best_state)  # the best epoch by validation is not the one training ended with
    distributed.broadcast_state(model)
    if plan.channels_last:
        model.to(memory_format=torch.contiguous_format)  # what export and every later stage expect
    return model


TrainState = dict[str, object]


def _train_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> TrainState:
    """A deep copy of the weights and optimizer state (the guard restores both together)."""
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
    }


def _guard_epoch(
    guard: CollapseGuard,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    metrics: dict[str, float],
    best: TrainState,
    device: torch.device,
) -> tuple[TrainState, bool]:
    """Measure the guard after an FGSM-RS epoch: ``(the best state, whether to stop)``.

    On a collapse the best state is loaded back into ``model`` and ``optimizer`` and ``metrics``
    gets ``fast_collapsed = 1``. The accuracies are averaged over the ranks, so every rank of a
    distributed run takes the same decision.
    """
    world = max(distributed.current().world_size, 1)
    pgd_acc, fgsm_acc = (v / world for v in distributed.all_sum(list(guard.measure(model)), device))
    metrics.update(guard_pgd_acc=pgd_acc, guard_fgsm_acc=fgsm_acc)
    improved, reason = guard.observe(epoch, pgd_acc, fgsm_acc)
    if improved:
        return _train_state(model, optimizer), False
    if reason is None:
        return best, False
    after = "stopping" if guard.on_collapse is OnCollapse.STOP else "PGD-AT for the remaining epochs"
    logger.warning(
        "fast adversarial training collapsed in epoch %d (%s): back to epoch %d's weights, %s",
        epoch + 1, reason, guard.best_epoch + 1, after,
    )  # fmt: skip
    model.load_state_dict(best["model"])  # type: ignore[arg-type]
    # Momentum from the best epoch, the learning rate of now: the schedule goes on where it is.
    rates = [group["lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(best["optimizer"])  # type: ignore[arg-type]
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    metrics["fast_collapsed"] = 1.0
    return best, guard.on_collapse is OnCollapse.STOP
