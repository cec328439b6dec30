"""Train with this project's own step, then add the robust pruning step from robust_pruning."""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow

HERE = Path(__file__).resolve().parent
PRUNING_PROJECT = HERE.parent / "robust_pruning"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--recipe", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overrides", default="")
    args = parser.parse_args()
    out = args.out.resolve()
    checkpoint = out / "trained.pt"
    common = {"recipe": str(args.recipe.resolve()), "out": str(out), "overrides": args.overrides}
    mlflow.projects.run(
        str(HERE),
        entry_point="train",
        env_manager="local",
        parameters={"epochs": args.epochs, "checkpoint": str(checkpoint)},
    )
    # The pruning step takes this project's checkpoint instead of pretraining its own model; the
    # later steps name it too, since the output folder belongs to one resolved recipe.
    for step in ("prune", "finetune", "export"):
        mlflow.projects.run(
            str(PRUNING_PROJECT),
            entry_point=step,
            env_manager="local",
            parameters={**common, "checkpoint": str(checkpoint)},
        )
    mlflow.projects.run(
        str(PRUNING_PROJECT),
        entry_point="gate",
        env_manager="local",
        parameters={
            "model": str(out / "model.onnx"),
            "recipe": common["recipe"],
            "report": str(out / "gate"),
            "overrides": args.overrides,
        },
    )


if __name__ == "__main__":
    main()
