"""Subcommands: each ``register_*`` adds one subparser whose ``handler`` returns the exit code."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from robprune_deploy.algorithms import ALGORITHMS
from robprune_deploy.cli.common import add_stage_parser, context_of, recipe_of, warn_about_plugin_conflicts
from robprune_deploy.cli.deploy_commands import register_deploy_commands
from robprune_deploy.cli.doctor_command import register_doctor
from robprune_deploy.errors import RobPruneError
from robprune_deploy.pipeline import RunContext, stages
from robprune_deploy.pipeline.ownership import owned_output
from robprune_deploy.pipeline.run import run_pipeline, verdict_line
from robprune_deploy.recipe import recipe_to_dict

_T = TypeVar("_T")


def _run(args: argparse.Namespace) -> int:
    recipe = recipe_of(args)
    ctx = context_of(args, recipe)
    summary = run_pipeline(ctx)
    if ctx.is_main:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
        # The run itself succeeded (exit 0); its last line is the gate's verdict, as `robprune gate` ends.
        verdict = verdict_line(summary["gate.passed"], summary["gate.failures"], ctx.out_dir / "gate.md")
        print(verdict, file=sys.stderr)
    return 0


def register_run(sub: Any) -> None:
    add_stage_parser(sub, "run", _run, "run the whole pipeline of a recipe")


def _algorithms(args: argparse.Namespace) -> int:
    table = Table(title="registered robust pruning algorithms")
    for column in ("name", "granularity", "package", "description"):
        table.add_column(column)
    for name in ALGORITHMS.names():
        cls = ALGORITHMS.get(name)
        granularity = ", ".join(g.value for g in cls.granularities)
        table.add_row(name, granularity, ALGORITHMS.provider(name), cls.description)
    Console(width=140).print(table)
    warn_about_plugin_conflicts()
    return 0


def register_algorithms(sub: Any) -> None:
    p = sub.add_parser("algorithms", help="list the registered algorithms")
    p.set_defaults(handler=_algorithms)


@contextlib.contextmanager
def _stage_run(args: argparse.Namespace, stage: str) -> Iterator[RunContext]:
    """A context for one stage command: earlier stages are loaded from ``--out`` when complete,
    and the command's MLflow run (its parent for the stage's nested run) wraps it."""
    ctx = context_of(args, recipe_of(args))
    tags = {"stage": stage, "algorithm": ctx.recipe.compression.algorithm, "dataset": ctx.recipe.data.name}
    with owned_output(ctx, fresh=False), ctx.tracker.pipeline(stage, recipe_to_dict(ctx.recipe), tags):
        yield ctx


def _earlier(ctx: RunContext, args: argparse.Namespace, action: Callable[[], _T]) -> _T:
    ctx.resume = True
    try:
        return action()
    finally:
        ctx.resume = args.resume


def _pretrain(args: argparse.Namespace) -> int:
    with _stage_run(args, "pretrain") as ctx:
        stages.pretrain(ctx)
    print(json.dumps(ctx.summary, indent=2))
    return 0


def _prune(args: argparse.Namespace) -> int:
    with _stage_run(args, "prune") as ctx:
        model = _earlier(ctx, args, lambda: stages.pretrain(ctx))
        result = stages.prune(ctx, model)
    print(json.dumps(result.statistics().to_dict() | {"layers": None}, indent=2, default=str))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    with _stage_run(args, "finetune") as ctx:
        if not (ctx.out_dir / stages.PRUNED).is_file():
            raise RobPruneError(f"{ctx.out_dir}: no {stages.PRUNED}; run `robprune prune` first")
        result = _earlier(ctx, args, lambda: stages.prune(ctx, stages.pretrain(ctx)))
        stripped = stages.finetune(ctx, result)
    print(json.dumps(stages.describe(result, stripped, ctx), indent=2))
    return 0


def register_stages(sub: Any) -> None:
    for name, handler, text in (
        ("pretrain", _pretrain, "adversarial pretraining only (or load model.checkpoint); writes pretrained.pt"),
        ("prune", _prune, "pretrain (or load model.checkpoint) and run the mask search; writes pruned.pt"),
        ("finetune", _finetune, "adversarial fine-tuning of --out/pruned.pt; writes finetuned.pt"),
    ):
        add_stage_parser(sub, name, handler, text)


REGISTRARS = [register_run, register_algorithms, register_stages, register_deploy_commands, register_doctor]
