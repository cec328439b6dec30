"""The verdicts' start models: each trained once, to a plateau, and shipped under benchmarks/start_models/.

Every method and seed of a verdict starts from the same dense, adversarially trained model (seeds
vary the search and the fine-tuning only, as in the Adversarial Pruning Benchmark), so a difference
between methods is the methods', not extra adversarial epochs on an under-trained start.

    python benchmarks/start_models.py train digits_cnn    # the quick start's, on the bundled digits
    python benchmarks/start_models.py train fmnist_cnn --fmnist-root ../shared/datasets/fashion-mnist
    python benchmarks/start_models.py ship fmnist_cnn      # checkpoint, SHA-256, curve, figures
    python benchmarks/start_models.py check fmnist_cnn     # reload (weights_only) and reproduce the figures

A model whose first training did not plateau is trained further in a second cycle, a warm restart from
the first's selected weights (``EARLIER_CYCLE``: ``train resnet20_cycle1``, then ``train resnet20``),
and judged on the two cycles' curve.

``train`` runs ``robprune pretrain`` on ``start_models/<name>.yaml`` in ``runs/start_models/<name>``
(``--resume`` continues an interrupted training from its last epoch). ``ship`` copies the selected
weights to ``start_models/<name>.pt`` (tensors only), reads the per-epoch validation curve from the
run's MLflow store, decides whether it plateaued, measures the check figures on a fixed validation
subset and writes ``start_models/<name>.json`` and ``<name>_curve.png``. ``check`` loads the shipped
file with ``weights_only=True`` and recomputes the check figures; the test suite runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from provenance import provenance

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHIPPED = HERE / "start_models"
MODELS = ("digits_cnn", "fmnist_cnn", "resnet20")
# A model trained in two cycles: its recipe restarts (pretrain.from_checkpoint) from the selected weights of
# the named earlier training, whose curve comes first in the model's curve and its plateau.
EARLIER_CYCLE = {"resnet20": "resnet20_cycle1"}
# Validation images of the recorded check figures: the full check and the test suite's quick one.
CHECK_SIZES = (500, 100)
# A plateau: the last quarter of the epochs improves the best validation PGD accuracy by less than this.
PLATEAU_TOLERANCE = 0.01


@dataclass(frozen=True)
class Plateau:
    """Whether a validation curve stopped improving, and by how much its last quarter still moved."""

    plateaued: bool
    best_epoch: int
    best: float
    best_before_last_quarter: float
    last_quarter_gain: float

    @classmethod
    def of(cls, curve: list[float], tolerance: float = PLATEAU_TOLERANCE) -> Plateau:
        if len(curve) < 4:
            raise ValueError(f"a plateau needs at least 4 epochs, the curve has {len(curve)}")
        cut = len(curve) - max(1, len(curve) // 4)
        before, best = max(curve[:cut]), max(curve)
        return cls(best - before < tolerance, curve.index(best) + 1, best, before, best - before)


def _run_dir(name: str, runs: Path) -> Path:
    return runs / "start_models" / name


def _tracking_uri(runs: Path) -> str:
    """The MLflow store every start model's training logs to (``ship`` reads the curves from it)."""
    return f"sqlite:///{(runs / 'start_models' / 'mlflow.db').resolve()}"


def _overrides(args: argparse.Namespace) -> list[str]:
    sets = [f"runtime.threads={args.threads}", *args.set]
    earlier = EARLIER_CYCLE.get(args.model)
    if earlier is not None:  # the first cycle's run in this --runs folder
        sets.append(f"model.checkpoint={(_run_dir(earlier, args.runs) / 'pretrained.pt').resolve()}")
    if args.fmnist_root is not None:
        sets.append(f"data.root={args.fmnist_root.resolve()}")
    return [item for s in sets for item in ("--set", s)]


def train(args: argparse.Namespace) -> None:
    out = _run_dir(args.model, args.runs)
    resume = ["--resume"] if (out / "state.json").is_file() else []
    command = [
        sys.executable, "-m", "robprune_deploy.cli.main", "pretrain", str(SHIPPED / f"{args.model}.yaml"),
        "--out", str(out), "--tracking-uri", _tracking_uri(args.runs),
        *_overrides(args), *resume,
    ]  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=env, cwd=REPO)


def _curve(name: str, runs: Path) -> dict[str, list[float]]:
    """The per-epoch curve of the whole training, an earlier cycle's (:data:`EARLIER_CYCLE`) first."""
    own = _cycle_curve(_run_dir(name, runs), runs)
    earlier = EARLIER_CYCLE.get(name)
    if earlier is None:
        return own
    first = _curve(earlier, runs)
    return {key: first[key] + own[key] for key in own}


def _cycle_curve(out: Path, runs: Path) -> dict[str, list[float]]:
    """The per-epoch curve of one training. Each resume logs to a new MLflow run, so the curve is
    merged by epoch from every pretrain run whose pipeline run has the same parameters (the recipe) as
    the one that finished; a later run's value wins an epoch both logged."""
    from mlflow.tracking import MlflowClient

    state = json.loads((out / "state.json").read_text())
    final = state["stages"]["pretrain"]["mlflow.pretrained_uri"].split("/")[1]
    client = MlflowClient(_tracking_uri(runs))
    final_run = client.get_run(final)
    recipe_params = client.get_run(final_run.data.tags["mlflow.parentRunId"]).data.params
    pieces = [
        run
        for run in client.search_runs(
            [final_run.info.experiment_id], "tags.stage = 'pretrain'", order_by=["attributes.start_time ASC"]
        )
        if "mlflow.parentRunId" in run.data.tags
        and client.get_run(run.data.tags["mlflow.parentRunId"]).data.params == recipe_params
    ]
    curve: dict[str, list[float]] = {}
    for key in ("val_pgd_acc", "val_clean_acc", "train_adv_acc", "loss", "lr"):
        by_epoch = {m.step: m.value for run in pieces for m in client.get_metric_history(run.info.run_id, key)}
        if sorted(by_epoch) != list(range(1, len(by_epoch) + 1)):
            raise SystemExit(f"{key}: the runs in {runs} log epochs {sorted(by_epoch)}, not 1..N")
        curve[key] = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    return curve


def check_figures(
    name: str, checkpoint: Path, fmnist_root: Path | None, overrides: list[str], examples: int
) -> dict[str, float]:
    """Clean and PGD-10 accuracy of ``checkpoint`` on the first ``examples`` validation images (at most)
    (fixed attack seed): the figures a shipped model must reproduce after reloading."""
    import torch
    from torch.utils.data import Subset

    from robprune_deploy.checkpoints import load_model_weights
    from robprune_deploy.data import build_dataset, make_loader, validation_split
    from robprune_deploy.pipeline.recipe_model import recipe_model
    from robprune_deploy.recipe import load_recipe
    from robprune_deploy.training import evaluate_robustness

    sets = [*overrides, *([f"data.root={fmnist_root.resolve()}"] if fmnist_root is not None else [])]
    recipe = load_recipe(SHIPPED / f"{name}.yaml", sets)
    d = recipe.data
    data = build_dataset(d.name, d.root, d.image_size, d.augment)
    _, val_idx = validation_split(len(data.train), d.val_size)  # type: ignore[arg-type]  # the run's split
    subset = Subset(data.unaugmented_train, val_idx[:examples])
    model = load_model_weights(recipe_model(recipe, data), checkpoint).eval()
    batches = make_loader(subset, 250, shuffle=False)
    threat = recipe.attack.threat(recipe.attack.val_steps)
    figures = evaluate_robustness(model, batches, torch.device("cpu"), threat, seed=0)
    # a validation split smaller than ``examples`` (digits: 300) is measured whole, and says so
    return {"examples": len(subset), "clean_acc": figures["clean_acc"], "pgd10_acc": figures["pgd_acc"]}


def _plot(name: str, curve: dict[str, list[float]], plateau: Plateau, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = range(1, len(curve["val_pgd_acc"]) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, curve["val_clean_acc"], label="validation clean")
    ax.plot(epochs, curve["val_pgd_acc"], label="validation PGD-10")
    ax.plot(epochs, curve["train_adv_acc"], label="training PGD (adversarial)", alpha=0.6)
    ax.axvline(plateau.best_epoch, color="grey", linestyle=":", label=f"selected epoch {plateau.best_epoch}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    verdict = "plateaued" if plateau.plateaued else "still improving"
    ax.set_title(f"{name} start model: {verdict} (last quarter +{100 * plateau.last_quarter_gain:.1f} points)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ship(args: argparse.Namespace) -> None:
    from robprune_deploy.atomic import write_json
    from robprune_deploy.checkpoints import load_checkpoint, save_checkpoint

    out = _run_dir(args.model, args.runs)
    state = load_checkpoint(out / "pretrained.pt")  # the selected epoch's weights (select: best_val_pgd)
    target = SHIPPED / f"{args.model}.pt"
    save_checkpoint({"model": state["model"]}, target)  # tensors only
    curve = _curve(args.model, args.runs)
    plateau = Plateau.of(curve["val_pgd_acc"])
    earlier = EARLIER_CYCLE.get(args.model)
    cycles = [f"{earlier}.yaml"] if earlier is not None else []
    figures = json.loads((out / "state.json").read_text())["stages"]["pretrain"]
    record = {
        "model": args.model,
        "checkpoint": target.name,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "recipe": f"{args.model}.yaml",
        "earlier_cycles": cycles,  # their epochs come first in the curve
        "command": " && ".join(
            f"python benchmarks/start_models.py {action} {name}"
            for action, name in [
                *(("train", c.removesuffix(".yaml")) for c in cycles),
                ("train", args.model),
                ("ship", args.model),
            ]
        ),
        "selected": {k: v for k, v in figures.items() if not k.startswith("mlflow.")},
        "plateau": {**plateau.__dict__, "tolerance": PLATEAU_TOLERANCE},
        "curve": curve,
        "overrides": args.set,
        "check": {str(n): check_figures(args.model, target, args.fmnist_root, args.set, n) for n in CHECK_SIZES},
        **provenance([args.action, args.model, *sys.argv[3:]]),
    }
    write_json(SHIPPED / f"{args.model}.json", record)
    _plot(args.model, curve, plateau, SHIPPED / f"{args.model}_curve.png")
    verdict = "plateaued" if plateau.plateaued else "NOT plateaued: train longer before using it"
    print(f"{args.model}: best validation PGD-10 {plateau.best:.3f} at epoch {plateau.best_epoch}, {verdict}")
    print(f"shipped {target} sha256 {record['sha256']}")


def check(args: argparse.Namespace) -> None:
    record = json.loads((SHIPPED / f"{args.model}.json").read_text())
    target = SHIPPED / record["checkpoint"]
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != record["sha256"]:
        raise SystemExit(f"{target}: SHA-256 {digest} is not the recorded {record['sha256']}")
    expected = record["check"][str(args.check_examples)]
    figures = check_figures(args.model, target, args.fmnist_root, record["overrides"], args.check_examples)
    print(json.dumps({"recorded": expected, "measured": figures}, indent=1))
    if figures != expected:
        raise SystemExit(f"{args.model}: the reloaded model does not reproduce its recorded figures")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["train", "ship", "check"])
    parser.add_argument("model", choices=[*MODELS, *EARLIER_CYCLE.values()])
    parser.add_argument("--fmnist-root", type=Path, default=None, help="folder of the four Fashion-MNIST IDX files")
    parser.add_argument("--runs", type=Path, default=REPO / "runs", help="where the training runs live")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="recipe override for train (smoke runs)")
    parser.add_argument("--check-examples", type=int, choices=CHECK_SIZES, default=CHECK_SIZES[0])
    args = parser.parse_args()
    if args.action != "train" and args.model not in MODELS:
        later = [name for name, first in EARLIER_CYCLE.items() if first == args.model]
        parser.error(f"{args.model} is the first cycle of {later[0]}: train it, then train and ship {later[0]}")
    {"train": train, "ship": ship, "check": check}[args.action](args)


if __name__ == "__main__":
    main()
