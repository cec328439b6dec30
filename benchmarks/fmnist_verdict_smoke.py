"""The verdict's whole path at a tiny size: copies of its sweep files with smoke-sized settings.

``python benchmarks/fmnist_verdict.py smoke --out DIR`` writes, under ``DIR/sweeps/``, a copy of every
verdict sweep file whose trials run the same recipes with a few hundred Fashion-MNIST images, one or
two epochs, PGD of 2-3 steps and an evaluation of 100 test images (AutoAttack-fast on 40), on the
first compression ratio and the first 2 seeds of each grid; their runs, studies and MLflow store go
under ``DIR`` too. Then the verdict runs on them exactly as on the real files (validation sweep,
radius choice written into the smoke copies, test sweeps, report into ``DIR/results/``). Without
the shipped start models, stand-ins trained here for one FGSM-RS epoch take their place. The figures
mean nothing; the smoke proves that every step runs and hands the next what it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SEEDS = 2
START_MODELS = Path(__file__).resolve().parent / "start_models"
COMMON: dict[str, Any] = {
    "data.train_subset": 256,
    "data.val_size": 200,
    "attack.train_steps": 2,
    "attack.val_steps": 2,
    "attack.eval_steps": 3,
    "finetune.epochs": 1,
    "evaluate.num_examples": 100,
    "evaluate.ensemble_examples": 40,
    "evaluate.torch_examples": 50,
    "evaluate.apgd_steps": 5,
    "evaluate.square_queries": 20,
    "evaluate.indicator_examples": 10,
    "evaluate.latency.repeats": 2,
    "evaluate.latency.warmup": 1,
}
PER_ALGORITHM: dict[str, dict[str, Any]] = {
    "hydra": {"compression.config.epochs": 2, "compression.config.hessian_iterations": 3},
    "s2ap": {
        "compression.config.epochs": 2,
        "compression.config.warmup_epochs": 1,
        "compression.config.hessian_iterations": 3,
    },
    "l1_filter": {"finetune.bn_recalibration_batches": 2},
    "mrpf": {"finetune.bn_recalibration_batches": 2, "compression.config.calibration_size": 64},
}


def stand_in(recipe: Any, path: Path) -> Path:
    """A start model for the smoke: the recipe's network after one FGSM-RS epoch on 512 images."""
    import torch
    from torch.utils.data import Subset

    from robprune_deploy.checkpoints import save_checkpoint
    from robprune_deploy.data import build_dataset, make_loader
    from robprune_deploy.pipeline.recipe_model import recipe_model
    from robprune_deploy.pipeline.stages import plan_of
    from robprune_deploy.training import adversarial_train

    d = recipe.data
    data = build_dataset(d.name, d.root, d.image_size, d.augment)
    model = recipe_model(recipe, data)
    subset = Subset(data.train, range(512))
    plan = plan_of(recipe.pretrain.model_copy(update={"epochs": 1, "loss": "fgsm_rs", "lr": 0.05}))
    loader = lambda epoch: make_loader(subset, 128, shuffle=True, epoch=epoch)  # noqa: E731
    adversarial_train(model, plan, recipe.attack.threat(), loader, device=torch.device("cpu"), show_progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": model.state_dict()}, path)
    return path


def smoke_layout(verdict: Any, out: Path, fmnist_root: Path | None) -> Any:
    """Write the smoke copies of ``verdict``'s sweep files under ``out``; returns their layout."""
    import fmnist_verdict

    from robprune_deploy.recipe import load_recipe

    sweeps = out / "sweeps"
    sweeps.mkdir(parents=True, exist_ok=True)
    root = {"data.root": str(fmnist_root.resolve())} if fmnist_root is not None else {}
    checkpoints: dict[str, str] = {}
    for name in (fmnist_verdict.VALIDATION, *fmnist_verdict.TEST_SWEEPS):
        spec = verdict.spec(name)
        recipe = load_recipe(spec.recipe, [f"{k}={v}" for k, v in root.items()])
        model = recipe.model.name
        if model not in checkpoints:
            shipped, made = START_MODELS / f"{model}.pt", out / "start_models" / f"{model}.pt"
            if not shipped.is_file() and not made.is_file():  # a rerun of the smoke keeps its stand-ins
                stand_in(recipe, made)
            checkpoints[model] = str(shipped if shipped.is_file() else made)
        grid = {key: values[:SEEDS] if key == "seed" else values for key, values in (spec.grid or {}).items()}
        if name != fmnist_verdict.VALIDATION:
            grid["compression.ratio"] = grid["compression.ratio"][:1]
        fixed = {
            **spec.fixed,
            **COMMON,
            **PER_ALGORITHM[recipe.compression.algorithm],
            **root,
            "model.checkpoint": checkpoints[model],
            "tracking.tracking_uri": f"sqlite:///{out / 'mlflow.db'}",
        }
        document = {
            "recipe": str(spec.recipe),
            "out": str(out / "runs" / name),
            "study": spec.study,
            "fixed": fixed,
            "grid": grid,
            "objective": spec.objective.model_dump(),
        }
        (sweeps / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return fmnist_verdict.Layout(sweeps, out / "results")
