"""``robprune run``: the whole pipeline of a recipe, :data:`STAGES` one after another, in one MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from robprune_deploy.atomic import write_json, write_text
from robprune_deploy.gate.gating import (
    GateVerdict,
)
from robprune_deploy.pipeline import deploy, stages
from robprune_deploy.pipeline import int8_stage as int8_stages
from robprune_deploy.pipeline.context import RunContext
from robprune_deploy.pipeline.ownership import owned_output
from robprune_deploy.pipeline.release_stages import Gate, GateInt8, LogInt8Model, LogModels
from robprune_deploy.pipeline.run_report import write_report
from robprune_deploy.pipeline.stage_runner import PipelineRunner, Stage, Values
from robprune_deploy.recipe import Recipe, recipe_to_dict
from robprune_deploy.reporting import plot_layers, plot_training
from robprune_deploy.tracking.uris import localize_checkpoint

SUMMARY = "summary.json"
REPORT = "report.md"
RESOLVED_RECIPE = "recipe.yaml"


INT8_STAGES: tuple[Stage, ...] = (int8_stages.Quantize(), deploy.Evaluate("int8"), LogInt8Model(), GateInt8())
"""What ``robprune run`` does with ``quantize.enabled`` after the FP32 gate, and ``robprune quantize``
on a finished folder."""

STAGES: tuple[Stage, ...] = (
    stages.Pretrain(),
    stages.Prune(),
    stages.Finetune(),
    stages.Compression(),
    stages.MeasureTorch(),
    stages.Splits(),
    deploy.Export(),
    deploy.Evaluate("fp32"),
    LogModels(),
    Gate(),
    *INT8_STAGES,
)
"""The pipeline: the order its stages run in, and the order ``--resume`` restores them in (a stage
run again makes those after it incomplete)."""


def run_pipeline(ctx: RunContext) -> dict[str, Any]:
    """Every stage of :data:`STAGES`: pretrain -> prune -> finetune -> export -> evaluate -> gate
    (-> quantize -> evaluate_int8 -> gate_int8).

    Writes ``summary.json``, ``report.md``, ``model.onnx``, ``dense.onnx`` and plots into the output
    folder and records everything in one parent MLflow run with a nested run per stage. The folder
    is claimed first (:func:`~robprune_deploy.pipeline.ownership.owned_output`): inputs are checked,
    a folder of another recipe is refused, and the folder is locked while the run works in it.
    """
    recipe = ctx.recipe
    origin = localize_checkpoint(recipe)  # a models:/ or runs:/ checkpoint becomes a local file
    if origin:
        ctx.summary["mlflow.checkpoint_uri"] = origin
    with owned_output(ctx, fresh=not ctx.resume):
        _run_tracked(ctx)
    return ctx.summary


def _run_tracked(ctx: RunContext) -> None:
    recipe = ctx.recipe
    document = recipe_to_dict(recipe)
    if "mlflow.checkpoint_uri" in ctx.summary:  # log the URI the user gave, not the download folder
        document["model"]["checkpoint"] = ctx.summary["mlflow.checkpoint_uri"]
    tags = {
        "algorithm": recipe.compression.algorithm,
        "target_ratio": str(recipe.compression.ratio),
        "dataset": recipe.data.name,
        "model": recipe.model.name,
        "granularity": str(recipe.compression.config.get("granularity", "")),
        "robprune.out_dir": str(ctx.out_dir.resolve()),
    }
    if ctx.resume and ctx.is_main:
        ctx.tracker.close_interrupted(str(ctx.out_dir.resolve()))
    name = f"{recipe.compression.algorithm}-{recipe.model.name}-{recipe.data.name}"
    with ctx.tracker.pipeline(name, document, tags):
        if ctx.is_main:
            ctx.tracker.log_artifact(
                write_text(ctx.out_dir / RESOLVED_RECIPE, yaml.safe_dump(document, sort_keys=False))
            )
        torch.manual_seed(recipe.seed)
        runner = PipelineRunner(ctx, STAGES)
        runner.run_all()
        if ctx.is_main:
            _finish(ctx, runner.values)


def _finish(ctx: RunContext, values: Values) -> None:
    """The run's MLflow id, its plots, ``summary.json`` and ``report.md``; the summary's numbers as metrics."""
    ctx.summary["mlflow.run_id"] = ctx.tracker.run_id or ""
    stats = values["result"].statistics()
    plots = [plot_layers(stats, ctx.out_dir / "layers.png"), plot_training(ctx.history, ctx.out_dir / "training.png")]
    for plot in plots:
        if plot is not None:
            ctx.tracker.log_artifact(plot, "plots")
    write_summary_and_report(ctx, stats.layer_table(), values["verdict"].to_dict())
    ctx.tracker.log_metrics({k: v for k, v in ctx.summary.items() if deploy.is_number(v)})


def write_summary_and_report(ctx: RunContext, layer_table: str, gate: dict[str, Any] | None) -> None:
    """``summary.json`` and ``report.md`` from ``ctx.summary`` (``gate``: the FP32 verdict, ``gate.json``'s
    contents), both logged to the run. ``robprune run`` and ``robprune quantize`` end here."""
    summary = write_json(ctx.out_dir / SUMMARY, ctx.summary)
    report = write_report(ctx.out_dir / REPORT, ctx.summary, layer_table, gate=gate)
    for file in (summary, report):
        ctx.tracker.log_artifact(file)


def release_int8(runner: PipelineRunner) -> GateVerdict:
    """The :data:`INT8_STAGES` on ``runner`` (which holds ``deployable``, and the FP32 ``robustness``
    when measured in this process): quantize, evaluate, log, register and gate the INT8 model."""
    for stage in INT8_STAGES:
        runner.run(stage, asked=True)
    verdict: GateVerdict = runner.values["int8_verdict"]
    return verdict


def verdict_line(passed: bool, failures: list[str], report: Path) -> str:
    """The one-line verdict commands end with: ``gate PASSED (...)`` or ``gate FAILED: checks (...)``."""
    state = "PASSED" if passed else "FAILED: " + ", ".join(failures)
    return f"gate {state} ({report})"


def run_recipe(recipe: Recipe, out_dir: Path, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Run ``recipe`` into ``out_dir`` without tracking (the CLI wires MLflow in)."""
    return run_pipeline(RunContext(recipe, out_dir, resume=resume, show_progress=show_progress))
