"""Handlers of ``run``, ``algorithms`` and the training stages; each returns the exit code.

The parser (:mod:`robprune_deploy.cli.parser`) names them by ``"module:function"`` and imports this
module only when one of them runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from robprune_deploy.algorithms import ALGORITHMS
from robprune_deploy.cli.common import context_of, recipe_of, warn_about_plugin_conflicts
from robprune_deploy.cli.run_summary import summary_lines
from robprune_deploy.errors import RobPruneError
from robprune_deploy.pipeline import RunContext, stages
from robprune_deploy.pipeline.driver import run_pipeline, verdict_line
from robprune_deploy.pipeline.ownership import owned_output
from robprune_deploy.recipe import recipe_to_dict

_T = TypeVar("_T")


def handle_run(args: argparse.Namespace) -> int:
    recipe = recipe_of(args)
    ctx = context_of(args, recipe)
    summary = run_pipeline(ctx)
    if ctx.is_main:
        if args.json:  # for scripts; summary.json in --out holds the same
            print(json.dumps(summary, indent=2, sort_keys=True, default=str))
        else:
            print("\n".join(summary_lines(summary, ctx.out_dir)))
        # The run itself succeeded (exit 0); its last line is the gate's verdict, as `robprune gate` ends.
        verdict = verdict_line(summary["gate.passed"], summary["gate.failures"], ctx.out_dir / "gate.md")
        print(verdict, file=sys.stderr)
    return 0


def handle_algorithms(args: argparse.Namespace) -> int:
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


def handle_pretrain(args: argparse.Namespace) -> int:
    with _stage_run(args, "pretrain") as ctx:
        stages.pretrain(ctx)
    print(json.dumps(ctx.summary, indent=2))
    return 0


def handle_prune(args: argparse.Namespace) -> int:
    with _stage_run(args, "prune") as ctx:
        model = _earlier(ctx, args, lambda: stages.pretrain(ctx))
        result = stages.prune(ctx, model)
    print(json.dumps(result.statistics().to_dict() | {"layers": None}, indent=2, default=str))
    return 0


def handle_finetune(args: argparse.Namespace) -> int:
    with _stage_run(args, "finetune") as ctx:
        if not (ctx.out_dir / stages.PRUNED).is_file():
            raise RobPruneError(f"{ctx.out_dir}: no {stages.PRUNED}; run `robprune prune` first")
        result = _earlier(ctx, args, lambda: stages.prune(ctx, stages.pretrain(ctx)))
        stripped = stages.finetune(ctx, result)
    print(json.dumps(stages.describe(result, stripped, ctx), indent=2))
    return 0
