"""Subcommands: each ``register_*`` adds one subparser whose ``handler`` returns the exit code."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from robprune_deploy.algorithms import ALGORITHMS
from robprune_deploy.cli.common import add_recipe_arguments, add_run_arguments, context_of, recipe_of
from robprune_deploy.cli.deploy_commands import register_deploy_commands
from robprune_deploy.errors import RobPruneError
from robprune_deploy.pipeline import run_pipeline, stages


def _run(args: argparse.Namespace) -> int:
    recipe = recipe_of(args)
    ctx = context_of(args, recipe)
    summary = run_pipeline(ctx)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


def register_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run the whole pipeline of a recipe")
    add_recipe_arguments(p)
    add_run_arguments(p)
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    p.set_defaults(handler=_run)


def _algorithms(args: argparse.Namespace) -> int:
    table = Table(title="registered robust pruning algorithms")
    for column in ("name", "granularity", "package", "description"):
        table.add_column(column)
    for name in ALGORITHMS.names():
        cls = ALGORITHMS.get(name)
        granularity = ", ".join(g.value for g in cls.granularities)
        table.add_row(name, granularity, ALGORITHMS.provider(name), cls.description)
    Console(width=140).print(table)
    return 0


def register_algorithms(sub: Any) -> None:
    p = sub.add_parser("algorithms", help="list the registered algorithms")
    p.set_defaults(handler=_algorithms)


def _prune(args: argparse.Namespace) -> int:
    ctx = context_of(args, recipe_of(args))
    result = stages.prune(ctx, stages.pretrain(ctx))
    print(json.dumps(result.statistics().to_dict() | {"layers": None}, indent=2, default=str))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    ctx = context_of(args, recipe_of(args))
    ctx.resume = True  # pretrain and prune come from --out
    if not ctx.is_done("prune"):
        raise RobPruneError(f"{ctx.out_dir}: no completed prune stage; run `robprune prune` first")
    result = stages.prune(ctx, stages.pretrain(ctx))
    stripped = stages.finetune(ctx, result)
    print(json.dumps(stages.describe(result, stripped, ctx), indent=2))
    return 0


def register_stages(sub: Any) -> None:
    for name, handler, text in (
        ("prune", _prune, "pretrain (or load model.checkpoint) and run the mask search; writes pruned.pt"),
        ("finetune", _finetune, "adversarial fine-tuning of --out/pruned.pt; writes finetuned.pt"),
    ):
        p = sub.add_parser(name, help=text)
        add_recipe_arguments(p)
        add_run_arguments(p)
        p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
        p.set_defaults(handler=handler)


REGISTRARS = [register_run, register_algorithms, register_stages, register_deploy_commands]
