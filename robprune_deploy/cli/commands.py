"""Handlers of ``run``, ``algorithms`` and the training stages; each returns the exit code.

The parser (:mod:`robprune_deploy.cli.parser`) names them by ``"module:function"`` and imports this
module only when one of them runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.table import Table

from robprune_deploy.algorithms import ALGORITHMS
from robprune_deploy.cli.common import context_of, recipe_of, warn_about_plugin_conflicts
from robprune_deploy.cli.run_summary import summary_lines
from robprune_deploy.errors import RobPruneError
from robprune_deploy.pipeline import stages
from robprune_deploy.pipeline.driver import STAGES, run_pipeline, verdict_line
from robprune_deploy.pipeline.ownership import owned_output
from robprune_deploy.pipeline.stage_runner import PipelineRunner
from robprune_deploy.recipe import recipe_to_dict


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
def _stage_run(args: argparse.Namespace, stage: str, needs: str | None = None) -> Iterator[PipelineRunner]:
    """A runner for one stage command: earlier stages are loaded from ``--out`` when complete
    (:meth:`PipelineRunner.run_through`), and the command's MLflow run (its parent for the stage's
    nested run) wraps it. ``needs``: the earlier stage's file the command cannot start without."""
    ctx = context_of(args, recipe_of(args))
    tags = {"stage": stage, "algorithm": ctx.recipe.compression.algorithm, "dataset": ctx.recipe.data.name}
    with owned_output(ctx, fresh=False), ctx.tracker.pipeline(stage, recipe_to_dict(ctx.recipe), tags):
        if needs is not None and not (ctx.out_dir / needs).is_file():
            raise RobPruneError(f"{ctx.out_dir}: no {needs}; run `robprune prune` first")
        runner = PipelineRunner(ctx, STAGES)
        runner.run_through(stage)
        yield runner


def handle_pretrain(args: argparse.Namespace) -> int:
    with _stage_run(args, "pretrain") as runner:
        pass
    print(json.dumps(runner.ctx.summary, indent=2))
    return 0


def handle_prune(args: argparse.Namespace) -> int:
    with _stage_run(args, "prune") as runner:
        result = runner.values["result"]
    print(json.dumps(result.statistics().to_dict() | {"layers": None}, indent=2, default=str))
    return 0


def handle_finetune(args: argparse.Namespace) -> int:
    with _stage_run(args, "finetune", needs=stages.PRUNED) as runner:
        result, stripped = runner.values["result"], runner.values["deployable"]
    print(json.dumps(stages.describe(result, stripped, runner.ctx).summary_items(), indent=2))
    return 0
