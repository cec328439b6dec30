"""What several command handlers share: the validated recipe and the run context.

The arguments themselves are defined in :mod:`robprune_deploy.cli.parser`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from robprune_deploy.algorithms import ALGORITHMS
from robprune_deploy.errors import RecipeError
from robprune_deploy.pipeline import RunContext
from robprune_deploy.pipeline.ownership import check_output_path
from robprune_deploy.recipe import Recipe, load_recipe
from robprune_deploy.tracking.store_checks import bound_http_waits
from robprune_deploy.tracking.uris import localize_checkpoint


def warn_about_plugin_conflicts() -> None:
    """One ``warning:`` line on stderr per algorithm name that several distributions declare."""
    for conflict in ALGORITHMS.conflicts():
        print(f"warning: {conflict}", file=sys.stderr)


def recipe_of(args: argparse.Namespace) -> Recipe:
    """The validated recipe; MLflow's HTTP waits are bounded by its ``tracking`` section from here on.

    Plugin name conflicts are said first: they decide which code a recipe's algorithm runs.
    """
    warn_about_plugin_conflicts()
    recipe = load_recipe(args.recipe, args.overrides)
    uri = getattr(args, "tracking_uri", None) or (
        None if recipe.tracking.tracking_uri else os.environ.get("MLFLOW_TRACKING_URI")
    )
    if uri:
        recipe.tracking.tracking_uri = uri
    bound_http_waits(recipe.tracking.timeout_s, recipe.tracking.retries)
    return recipe


def _sign_key(args: argparse.Namespace) -> Any:
    """The ``--sign-key`` of ``robprune run``, loaded before anything runs (a bad key is said first)."""
    path = getattr(args, "sign_key", None)
    if path is None:
        return None
    from robprune_deploy.release.signing import load_private_key

    return load_private_key(path)


def context_of(args: argparse.Namespace, recipe: Recipe) -> RunContext:
    """The run context, tracked in MLflow (rank 0 only) unless ``tracking.enabled`` is false.

    :raises OutputError: for an unusable ``--out`` (checked before anything else touches it).
    """
    if args.force and args.resume:
        raise RecipeError("--force starts over and --resume continues: give one of them")
    check_output_path(args.out)
    ctx = RunContext(
        recipe,
        args.out,
        resume=args.resume,
        show_progress=not args.quiet,
        force=args.force,
        recipe_source=str(args.recipe.expanduser().resolve()),
        sign_key=_sign_key(args),
    )
    origin = localize_checkpoint(recipe)  # stages chain across runs: models:/... or runs:/... checkpoints
    if origin:
        ctx.summary["mlflow.checkpoint_uri"] = origin
    if recipe.tracking.enabled and ctx.is_main:
        from robprune_deploy.tracking.mlflow_tracker import MlflowTracker

        t = recipe.tracking
        ctx.tracker = MlflowTracker(t.tracking_uri, t.experiment, timeout_s=t.timeout_s, retries=t.retries)
    return ctx
