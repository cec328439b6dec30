"""The training stages of the pipeline: pretrain, prune, finetune (each resumable), and the torch
model's figures after them."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from torch import nn

from robprune_deploy import distributed
from robprune_deploy.algorithms import ALGORITHMS, Granularity, PruningContext, PruningResult
from robprune_deploy.algorithms.plugin_guard import plugin_code
from robprune_deploy.algorithms.verification import verify_masks, verify_result
from robprune_deploy.atomic import write_json
from robprune_deploy.checkpoints import load_model_weights, save_checkpoint
from robprune_deploy.data import first_examples, make_loader, seeded_subset
from robprune_deploy.pipeline.artifacts import load_pruned, save_pruned
from robprune_deploy.pipeline.context import RunContext
from robprune_deploy.pipeline.run_data import RunData
from robprune_deploy.pipeline.stage_runner import StageBase, StageRecord, Tracking, Values
from robprune_deploy.pipeline.summary_schema import CompressionFigures, TorchFigures
from robprune_deploy.progress import StageLines
from robprune_deploy.recipe import FinetuneSection, PretrainSection, TrainingSection, validate_algorithm_config
from robprune_deploy.surgery import count_model
from robprune_deploy.training import (
    AWPPlan,
    CollapseGuard,
    EpochSelection,
    FastATPlan,
    TrainingPlan,
    adversarial_train,
    check_finite_state,
    evaluate_robustness,
    recalibrate_batchnorm,
)

PRETRAINED = "pretrained.pt"
PRUNED = "pruned.pt"
FINETUNED = "finetuned.pt"
STATISTICS = "statistics.json"


def plan_of(section: TrainingSection) -> TrainingPlan:
    finetune = section if isinstance(section, FinetuneSection) else None
    pretrain = section if isinstance(section, PretrainSection) else None
    awp = AWPPlan(finetune.awp_gamma, finetune.awp_warmup) if finetune and finetune.uses_awp else None
    fast = FastATPlan(pretrain.fgsm_alpha) if pretrain and pretrain.uses_fgsm_rs else None
    loss = finetune.robust_loss if finetune else pretrain.robust_loss if pretrain else section.loss
    return TrainingPlan(
        section.epochs,
        section.lr,
        section.momentum,
        section.weight_decay,
        loss,
        section.trades_beta,
        section.eps_warmup_epochs,
        section.mart_beta,
        section.optimizer,
        awp=awp,
        fast=fast,
        channels_last=section.channels_last,
    )


def robustness(ctx: RunContext, model: nn.Module) -> dict[str, float]:
    """Clean and PGD-``eval_steps`` accuracy on the fixed evaluation subset of the final split (torch),
    its first ``evaluate.torch_examples`` examples when set (the ONNX evaluation covers all of it)."""
    threat = ctx.recipe.attack.threat(ctx.recipe.attack.eval_steps)
    batches = first_examples(ctx.eval_subset_batches(), ctx.recipe.evaluate.torch_examples)
    metrics = evaluate_robustness(model, batches, ctx.device, threat, seed=ctx.recipe.evaluate.subset_seed)
    return {**metrics, "examples": float(sum(len(y) for _, y in batches))}


def validation(ctx: RunContext, model: nn.Module) -> dict[str, float]:
    """``{"val_clean_acc", "val_pgd_acc"}``: the whole validation split, PGD-``attack.val_steps`` (torch)."""
    threat = ctx.recipe.attack.threat(ctx.recipe.attack.val_steps)
    metrics = evaluate_robustness(model, ctx.val_batches(), ctx.device, threat, seed=ctx.recipe.evaluate.subset_seed)
    return {f"val_{k}": v for k, v in metrics.items()}


def collapse_guard(ctx: RunContext, section: TrainingSection) -> CollapseGuard | None:
    """The catastrophic-overfitting guard of FGSM-RS pretraining, or ``None`` (another loss, or turned off).

    Its batch is fixed whatever the run seed: ``fgsm_guard_examples`` validation images, or training
    images without augmentation when the recipe has no validation split. PGD is ``attack.val_steps`` steps.
    """
    if not isinstance(section, PretrainSection) or not section.uses_fgsm_rs or section.fgsm_guard_examples == 0:
        return None
    source = ctx.val_set if ctx.val_set is not None else ctx.data.unaugmented_train
    subset = seeded_subset(source, section.fgsm_guard_examples, ctx.recipe.evaluate.subset_seed)
    x, y = next(iter(make_loader(subset, section.fgsm_guard_examples, shuffle=False)))
    return CollapseGuard(
        (x, y),
        ctx.recipe.attack.threat(ctx.recipe.attack.val_steps),
        drop=section.fgsm_guard_drop,
        gap=section.fgsm_guard_gap,
        on_collapse=section.fgsm_on_collapse,
        seed=ctx.recipe.evaluate.subset_seed,
    )


def _epoch_logger(ctx: RunContext, stage: str) -> Callable[[int, dict[str, float]], None]:
    return lambda epoch, metrics: ctx.record_epoch(stage, epoch, metrics)


def _train(ctx: RunContext, model: nn.Module, stage: Literal["pretrain", "finetune"]) -> dict[str, Any]:
    """Adversarial training of ``model`` under the recipe section of ``stage``, resumable per epoch.

    With a validation split every epoch is validated; with ``select: best_val_pgd`` the model ends
    with the weights of the best epoch. Returns the summary entries of the selection.
    """
    section = ctx.recipe.pretrain if stage == "pretrain" else ctx.recipe.finetune
    ctx.tracker.log_params(section.model_dump(mode="json"))
    validate = ctx.val_set is not None
    select = EpochSelection("val_pgd_acc") if section.select == "best_val_pgd" else None
    guard = collapse_guard(ctx, section)
    adversarial_train(
        model,
        plan_of(section),
        ctx.recipe.attack.threat(),
        ctx.train_loader,
        device=ctx.device,
        stage=stage,
        seed=ctx.recipe.seed,
        checkpoint_dir=ctx.out_dir / "checkpoints",
        resume=ctx.resume,
        on_epoch_end=_epoch_logger(ctx, stage),
        evaluate=(lambda m: validation(ctx, m)) if validate else None,
        select=select,
        show_progress=ctx.show_progress,
        guard=guard,
    )
    figures: dict[str, Any] = {}
    if guard is not None:
        # -1: no collapse. Zero-based epochs, as selected_epoch.
        figures[f"{stage}.fast_collapsed_epoch"] = guard.collapsed_epoch
        ctx.tracker.log_metrics({"fast_collapsed_epoch": float(guard.collapsed_epoch)})
    if select is None or select.epoch < 0:
        return figures
    ctx.tracker.log_metrics({"selected_epoch": float(select.epoch)})
    return {**figures, f"{stage}.selected_epoch": select.epoch, f"{stage}.selected_val_pgd_acc": select.value}


def _trains(ctx: RunContext) -> bool:
    recipe = ctx.recipe
    starts_here = recipe.model.checkpoint is None or recipe.pretrain.from_checkpoint
    return starts_here and recipe.pretrain.enabled and recipe.pretrain.epochs > 0


class Pretrain(StageBase):
    """Dense adversarial training, or the checkpoint named by ``model.checkpoint`` (trained further
    when ``pretrain.from_checkpoint``).

    Hands on ``model`` and ``dense``, its copy: the reference for export, latency and the gate's baseline.
    """

    name = "pretrain"
    outputs = ("model", "dense")

    def epochs(self, ctx: RunContext) -> int | None:
        return ctx.recipe.pretrain.epochs if _trains(ctx) else None

    def restore(self, ctx: RunContext, values: Values) -> StageRecord | None:
        path = ctx.out_dir / PRETRAINED
        if not path.is_file():
            return None
        self._hand_on(values, load_model_weights(ctx.new_model(), path).to(ctx.device))
        # the dense figures, measured before the interruption
        return StageRecord(self.name, ctx.state.completed()[self.name])

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        recipe = ctx.recipe
        model = ctx.new_model()
        path = ctx.out_dir / PRETRAINED
        if recipe.model.checkpoint is not None:
            load_model_weights(model, recipe.model.checkpoint)
            source = ctx.summary.get("mlflow.checkpoint_uri") or str(Path(recipe.model.checkpoint).resolve())
            ctx.tracker.log_params({"checkpoint": source})
        figures: dict[str, Any] = {}
        if _trains(ctx):
            figures.update(_train(ctx, model, "pretrain"))
        model.to(ctx.device)
        metrics = robustness(ctx, model)
        ctx.tracker.log_metrics({f"dense_{k}": v for k, v in metrics.items()})
        figures.update({"torch.dense_clean_acc": metrics["clean_acc"], "torch.dense_pgd_acc": metrics["pgd_acc"]})
        lines.note(figures)
        if ctx.val_set is not None:
            val = validation(ctx, model)
            ctx.tracker.log_metrics({f"dense_{k}": v for k, v in val.items()})
            figures.update({"val.dense_clean_acc": val["val_clean_acc"], "val.dense_pgd_acc": val["val_pgd_acc"]})
        save_checkpoint({"model": model.state_dict()}, path)
        if recipe.model.checkpoint is None or _trains(ctx):
            # Trained here: a later run (or the MLproject `prune` entry point) can start from it
            # with model.checkpoint=runs:/<stage run>/checkpoints/pretrained.pt.
            uri = ctx.tracker.log_checkpoint(path)
            if uri:
                figures["mlflow.pretrained_uri"] = uri
        self._hand_on(values, model)
        return StageRecord(self.name, figures)  # in state.json too: --resume restores them into the summary

    @staticmethod
    def _hand_on(values: Values, model: nn.Module) -> None:
        values["model"], values["dense"] = model, copy.deepcopy(model)


class Prune(StageBase):
    """Run the recipe's algorithm (mask search) on the pretrained model; hands on ``result``."""

    name = "prune"
    inputs = ("model",)
    outputs = ("result",)

    def epochs(self, ctx: RunContext) -> int | None:
        return getattr(validate_algorithm_config(ctx.recipe), "epochs", None)

    def restore(self, ctx: RunContext, values: Values) -> StageRecord | None:
        path = ctx.out_dir / PRUNED
        if not path.is_file():
            return None
        scope = ctx.recipe.compression.ignored_scope.to_nncf()
        values["result"] = load_pruned(path, ctx.new_model().to(ctx.device), ctx.example_inputs, scope)
        return StageRecord(self.name)

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        recipe = ctx.recipe
        comp = recipe.compression
        config = validate_algorithm_config(recipe)
        name, distribution = comp.algorithm, ALGORITHMS.provider(comp.algorithm)
        with plugin_code(name, distribution, "__init__"):
            algorithm = ALGORITHMS.get(name)(config)
        ctx.tracker.log_params({"algorithm": comp.algorithm, "ratio": comp.ratio, **config.model_dump(mode="json")})
        context = PruningContext(
            train_data=ctx.train_loader(0),
            epoch_loader=ctx.train_loader,
            ratio=comp.ratio,
            threat=recipe.attack.threat(),
            example_inputs=ctx.example_inputs.to(ctx.device),
            loss=recipe.finetune.robust_loss,
            trades_beta=recipe.finetune.trades_beta,
            mart_beta=recipe.finetune.mart_beta,
            ignored_scope=comp.ignored_scope.to_nncf(),
            device=ctx.device,
            seed=recipe.seed,
            show_progress=ctx.show_progress,
            on_epoch_end=lambda stage, epoch, metrics: ctx.record_epoch(stage, epoch, metrics),
            checkpoint_dir=ctx.out_dir / "checkpoints",
            resume=ctx.resume,
        )
        # The algorithm's own code (often a plugin's): its bugs are named as such, exit 3.
        with plugin_code(name, distribution, "apply"):
            result = verify_masks(algorithm.apply(values["model"], context))
            statistics = result.statistics()  # channel keep-sets are checked against the groups here
            achieved = verify_result(algorithm, result, name, comp.tolerance)
        ctx.tracker.log_metrics({"achieved_ratio": achieved})
        lines.note({"achieved_ratio": achieved, "sparsity": statistics.sparsity})
        with plugin_code(name, distribution, "report"):
            reports = algorithm.report(result, ctx.out_dir / "plots")
        for file in reports:
            ctx.tracker.log_artifact(file, "plots")
        ctx.tracker.log_artifact(write_json(ctx.out_dir / STATISTICS, statistics.to_dict()))
        save_pruned(result, ctx.out_dir / PRUNED)
        values["result"] = result
        return StageRecord(self.name)


class Finetune(StageBase):
    """Adversarial fine-tuning with masks frozen; hands on the stripped model as ``deployable``.

    Channel-pruned models are stripped first (fine-tuning the physically smaller network computes
    the same function as fine-tuning the masked one, faster); unstructured ones keep their masks
    during training and are folded afterwards.
    """

    name = "finetune"
    inputs = ("result",)
    outputs = ("deployable",)

    def epochs(self, ctx: RunContext) -> int | None:
        return ctx.recipe.finetune.epochs

    def restore(self, ctx: RunContext, values: Values) -> StageRecord | None:
        path = ctx.out_dir / FINETUNED
        if not path.is_file():
            return None
        result: PruningResult = values["result"]
        channel = result.granularity is Granularity.CHANNEL
        trained = result.strip() if channel else result.model
        load_model_weights(trained, path)
        values["deployable"] = trained if channel else result.strip()
        return StageRecord(self.name, ctx.state.completed()[self.name])

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        recipe = ctx.recipe
        result: PruningResult = values["result"]
        channel = result.granularity is Granularity.CHANNEL
        trained = result.strip() if channel else result.model
        selection = _train(ctx, trained, "finetune")
        last = ctx.history.get("finetune", [])
        lines.note({**(last[-1][1] if last else {}), **selection})
        if recipe.finetune.bn_recalibration_batches:
            recalibrate_batchnorm(trained, ctx.train_loader(0), ctx.device, recipe.finetune.bn_recalibration_batches)
            check_finite_state(trained, "finetune: BatchNorm recalibration")
        save_checkpoint({"model": trained.state_dict()}, ctx.out_dir / FINETUNED)
        values["deployable"] = trained if channel else result.strip()
        return StageRecord(self.name, selection)


class Compression(StageBase):
    """What was pruned (:func:`describe`); under ``torchrun``, that every rank holds the same model."""

    name = "compression"
    inputs = ("result", "deployable")
    tracking: Tracking = "quiet"

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        result, deployable = values["result"], values["deployable"]
        world_size, state = _check_ranks_agree(deployable, result) if ctx.distributed else (None, None)
        figures = describe(result, deployable, ctx, world_size=world_size, state_sha256=state)
        return StageRecord.of(self.name, figures, tags={"granularity": result.granularity.value})


class MeasureTorch(StageBase):
    """The pruned torch model on the evaluation subset, and on the validation split (the figure
    hyper-parameter sweeps choose by). Not a tracked stage (its figures go to the pipeline's run),
    but minutes long on a big split: announced."""

    name = "measure (torch)"
    inputs = ("deployable",)
    tracking: Tracking = "parent"

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        deployable = values["deployable"]
        metrics = robustness(ctx, deployable)
        figures = TorchFigures(
            clean_acc=metrics["clean_acc"], pgd_acc=metrics["pgd_acc"], examples=int(metrics["examples"])
        )
        ctx.tracker.log_metrics({f"pruned_{k}": v for k, v in metrics.items()})
        lines.note(figures.summary_items())
        if ctx.is_main and ctx.val_set is not None:
            val = validation(ctx, deployable)
            figures = dataclasses.replace(
                figures,
                val_clean_acc=val["val_clean_acc"],
                val_pgd_acc=val["val_pgd_acc"],
                val_pgd_steps=ctx.recipe.attack.val_steps,
            )
            ctx.tracker.log_metrics({f"pruned_{k}": v for k, v in val.items()})
            lines.note({"val.clean_acc": val["val_clean_acc"], "val.pgd_acc": val["val_pgd_acc"]})
        return StageRecord.of(self.name, figures)


class Splits(StageBase):
    """Which split each group of figures was measured on (:meth:`RunData.split_summary`)."""

    name = "splits"
    tracking: Tracking = "quiet"
    main_only = True

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        return StageRecord(self.name, ctx.split_summary())


def _check_ranks_agree(deployable: nn.Module, result: PruningResult) -> tuple[int, str]:
    """Every rank must end with the same masks and weights; a divergence is a bug, not a warning."""
    digest = hashlib.sha256()
    for name, tensor in sorted({**deployable.state_dict(), **result.masks()}.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digests = distributed.gather_objects(digest.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks disagree on the pruned model: {digests}")
    return len(digests), str(digests[0])  # the world size, and the state every rank holds


def describe(
    result: PruningResult,
    stripped: nn.Module,
    ctx: RunData,
    *,
    world_size: int | None = None,
    state_sha256: str | None = None,
) -> CompressionFigures:
    """What was pruned (counted on the stripped model); under ``torchrun``, the ranks' common state."""
    stats = result.statistics()
    count = count_model(stripped, ctx.example_inputs.to(next(stripped.parameters()).device))
    channel = result.granularity is Granularity.CHANNEL
    return CompressionFigures(
        algorithm=result.algorithm,
        granularity=result.granularity.value,
        target_ratio=result.ratio,
        sparsity=stats.sparsity,
        params_dense=stats.params_dense,
        params_pruned=count.params if channel else count.nonzero_params,
        macs_dense=stats.macs_dense,
        macs_pruned=count.macs if channel else count.effective_macs,
        world_size=world_size,
        state_sha256=state_sha256,
    )
