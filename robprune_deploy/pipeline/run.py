"""``robprune run``: the whole pipeline of a recipe, one stage after another."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from robprune_deploy.atomic import write_json
from robprune_deploy.pipeline import deploy, stages
from robprune_deploy.pipeline.context import RunContext
from robprune_deploy.pipeline.report import write_report
from robprune_deploy.recipe import Recipe

SUMMARY = "summary.json"
REPORT = "report.md"


def run_pipeline(ctx: RunContext) -> dict[str, Any]:
    """Pretrain -> prune -> finetune -> strip -> evaluate; writes ``summary.json`` and returns it."""
    torch.manual_seed(ctx.recipe.seed)
    model = stages.pretrain(ctx)
    dense = copy.deepcopy(model)  # the reference for export, latency and the gate's baseline
    result = stages.prune(ctx, model)
    deployable = stages.finetune(ctx, result)
    ctx.summary.update(stages.describe(result, deployable, ctx))
    metrics = stages.robustness(ctx, deployable)
    ctx.summary.update({"torch.clean_acc": metrics["clean_acc"], "torch.pgd_acc": metrics["pgd_acc"]})
    if ctx.is_main:
        ctx.summary.update(deploy.export(ctx, deployable, dense, result))
        ctx.summary.update(deploy.evaluate(ctx, deployable))
    ctx.summary["mlflow.run_id"] = ctx.tracker.run_id or ""
    if ctx.is_main:
        write_json(ctx.out_dir / SUMMARY, ctx.summary)
        write_report(ctx.out_dir / REPORT, ctx.summary, result.statistics().layer_table())
    return ctx.summary


def run_recipe(recipe: Recipe, out_dir: Path, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Run ``recipe`` into ``out_dir`` without tracking (the CLI wires MLflow in)."""
    return run_pipeline(RunContext(recipe, out_dir, resume=resume, show_progress=show_progress))
