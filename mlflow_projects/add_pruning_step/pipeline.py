"""Train with this project's own step, then add the robust pruning step from robust_pruning.

Every step is an MLflow project run nested under one parent run in the recipe's experiment
(``tracking.experiment``), so the MLflow UI shows train -> prune -> finetune -> export -> gate as
the children of this pipeline. A failing gate ends the pipeline with the gate's one-line verdict.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import mlflow

from robprune_deploy.recipe import load_recipe
from robprune_deploy.tracking.project import choose_parent, link_runs
from robprune_deploy.tracking.store_checks import default_tracking_uri

HERE = Path(__file__).resolve().parent
PRUNING_PROJECT = HERE.parent / "robust_pruning"


def _step(project: Path, entry_point: str, experiment_id: str, parameters: dict[str, Any]) -> bool:
    """Run one entry point as a child of the active run; True when it succeeded."""
    submitted = mlflow.projects.run(
        str(project),
        entry_point=entry_point,
        env_manager="local",
        parameters=parameters,
        experiment_id=experiment_id,
        synchronous=False,
    )
    return bool(submitted.wait())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--recipe", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overrides", default="")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, shlex.split(args.overrides))
    out = args.out.resolve()
    checkpoint = out / "trained.pt"
    common = {"recipe": str(args.recipe.resolve()), "out": str(out), "overrides": args.overrides}
    mlflow.set_tracking_uri(recipe.tracking.tracking_uri or default_tracking_uri())
    parent = choose_parent(recipe.tracking.experiment)
    if parent.experiment is not None:
        mlflow.set_experiment(parent.experiment)
    with mlflow.start_run(run_id=parent.resume, run_name="add_pruning_step") as run:
        link_runs(run.info.run_id, parent)
        experiment = run.info.experiment_id
        steps: list[tuple[Path, str, dict[str, Any]]] = [
            (HERE, "train", {"epochs": args.epochs, "checkpoint": str(checkpoint)}),
            # The pruning step takes this project's checkpoint instead of pretraining its own model.
            (PRUNING_PROJECT, "prune", {**common, "checkpoint": str(checkpoint)}),
            # The later steps name it too, since the output folder belongs to one resolved recipe.
            (PRUNING_PROJECT, "finetune", {**common, "checkpoint": str(checkpoint)}),
            (PRUNING_PROJECT, "export", {**common, "checkpoint": str(checkpoint)}),
        ]
        for project, entry_point, parameters in steps:
            if not _step(project, entry_point, experiment, parameters):
                print(f"error: step {entry_point} failed; see its run in the MLflow UI", file=sys.stderr)
                mlflow.end_run("FAILED")
                return 1
        report = out / "gate"
        gate = {"model": str(out / "model.onnx"), "recipe": common["recipe"], "report": str(report)}
        if not _step(PRUNING_PROJECT, "gate", experiment, {**gate, "overrides": args.overrides}):
            verdict = json.loads((report / "gate.json").read_text()) if (report / "gate.json").is_file() else None
            failures = verdict["failures"] if verdict else ["no verdict"]
            mlflow.set_tags({"gate.passed": "false", "gate.failures": ",".join(failures)})  # as the gate run's tag
            print(f"gate FAILED: {', '.join(failures)} ({report / 'gate.md'})", file=sys.stderr)
            mlflow.end_run("FAILED")
            return 1
        mlflow.set_tags({"gate.passed": "true", "gate.failures": "none"})
    print(f"gate PASSED ({report / 'gate.md'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
