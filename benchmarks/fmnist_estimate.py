"""Throughput of the Fashion-MNIST grid's model on one thread, and the grid's time from it.

Measures, in CPU time of this process on one thread (robust to a shared machine, and equal to wall
time on an idle core): PGD-AT training images/s, HYDRA and S2AP mask-search images/s, PGD
evaluation images/s and onnxruntime forward images/s. Then adds up every stage of every task of a
budget (pretraining per seed, then each cell) plus a fixed cost per process (imports, ONNX export,
latency, plots: ``--overhead``, e.g. the CPU seconds of a ``--budget smoke`` cell) and divides by
the number of parallel jobs.

    python benchmarks/fmnist_estimate.py --budget cpu --overhead 40
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _cpu_rate(images: int, work: Callable[[], Any]) -> float:
    start = time.process_time()
    work()
    return images / (time.process_time() - start)


def measure(root: Path | None, images: int = 512, batch: int = 64, train_steps: int = 7) -> dict[str, float]:
    """Images per CPU-second on one thread for each kind of work the grid does."""
    import numpy as np

    from robprune_deploy import ALGORITHMS, PruningContext
    from robprune_deploy.attacks import ThreatModel
    from robprune_deploy.data import build_dataset, make_loader
    from robprune_deploy.evaluation import OnnxClassifier
    from robprune_deploy.export import export_onnx
    from robprune_deploy.models import build_model
    from robprune_deploy.training import TrainingPlan, adversarial_train, evaluate_robustness

    torch.set_num_threads(1)
    data = build_dataset("fashion_mnist", root)
    subset = torch.utils.data.Subset(data.train, range(images))
    loader = lambda epoch: make_loader(subset, batch, shuffle=True, epoch=epoch)  # noqa: E731
    model = build_model("fmnist_cnn", 10, 1, data.mean, data.std)
    train = ThreatModel(0.1, 0.025, train_steps)
    cpu = torch.device("cpu")
    rates = {
        "train": _cpu_rate(
            images,
            lambda: adversarial_train(model, TrainingPlan(1, 0.01), train, loader, device=cpu, show_progress=False),
        )
    }
    for name, config in (("hydra", {}), ("s2ap", {"gamma": 0.1, "warmup_epochs": 0})):
        cls = ALGORITHMS.get(name)
        context = PruningContext(
            train_data=loader(0), epoch_loader=loader, ratio=0.95, threat=train, example_inputs=data.test[0][0][None]
        )
        algorithm = cls(cls.Config.model_validate({"epochs": 1, **config}))
        rates[name] = _cpu_rate(images, lambda a=algorithm, c=context: a.apply(copy.deepcopy(model), c))
    batches = list(make_loader(torch.utils.data.Subset(data.test, range(images)), 256, shuffle=False))
    for steps in (10, 20):
        threat = ThreatModel(0.1, 0.025, steps)
        rates[f"pgd{steps}"] = _cpu_rate(images, lambda t=threat: evaluate_robustness(model, batches, cpu, t))
    path = export_onnx(model.eval(), Path("/tmp") / "fmnist_estimate.onnx", data.test[0][0][None])
    session = OnnxClassifier(path, ["cpu"], threads=1)
    x = np.stack([data.test[i][0].numpy() for i in range(256)])
    rates["onnx_forward"] = _cpu_rate(256 * 8, lambda: [session.predict(x) for _ in range(8)])
    return rates


def task_seconds(recipe: Any, rates: dict[str, float], algorithm: str | None, overhead: float) -> float:
    """CPU seconds of one pretraining (``algorithm`` None) or one cell under ``recipe`` (budget applied)."""
    d, a, ev = recipe.data, recipe.attack, recipe.evaluate
    train_n, val_n, test_n = d.train_subset or 55_000, d.val_size, ev.num_examples
    pgd = lambda steps, n: n / rates["pgd20"] * (steps + 1) / 21  # noqa: E731  (PGD cost grows with steps)
    validate = pgd(a.val_steps, val_n) if val_n else 0.0
    train_epoch = train_n / rates["train"] * (a.train_steps + 1) / 8 + validate
    dense = pgd(a.eval_steps, test_n) + validate  # the pretrain stage's dense figures
    if algorithm is None:
        return overhead + recipe.pretrain.epochs * train_epoch + dense
    seconds = overhead + dense + recipe.finetune.epochs * train_epoch
    if algorithm in ("hydra", "s2ap"):
        search_rate = rates[algorithm] * 8 / (a.train_steps + 1)
        seconds += recipe.compression.config.get("epochs", 10) * train_n / search_rate
    square = ev.square_queries * min(ev.square_examples, test_n) * 0.7 / rates["onnx_forward"]  # robust ones queried
    seconds += 5 * pgd(a.eval_steps, test_n) + 3 * square + validate  # torch, ONNX, gate x2 (pruned, dense), PGD-50
    return seconds


def estimate(budget_name: str, rates: dict[str, float], overhead: float, seeds: int = 3) -> tuple[float, list[str]]:
    """Total CPU seconds of the grid of ``budget_name`` and a line per task kind."""
    from fmnist_grid import BUDGETS, KEY_CELLS, PRETRAIN_RECIPE, RECIPES, all_cells, base_overrides

    from robprune_deploy.recipe import load_recipe

    budget = BUDGETS[budget_name]
    lines, total = [], 0.0
    pretrain = load_recipe(RECIPES / f"{PRETRAIN_RECIPE}.yaml", base_overrides(budget, "hydra", None))
    seconds = task_seconds(pretrain, rates, None, overhead)
    total += seeds * seconds
    lines.append(f"pretrain x {seeds}: {seconds / 60:.1f} min each")
    for cell in all_cells():
        recipe = load_recipe(cell.recipe, base_overrides(budget, cell.algorithm, None))
        runs = seeds if cell.name in KEY_CELLS else 1
        seconds = task_seconds(recipe, rates, cell.algorithm, overhead)
        total += runs * seconds
        lines.append(f"{cell.name} x {runs}: {seconds / 60:.1f} min each")
    return total, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--overhead", type=float, default=40.0, help="fixed CPU seconds per process")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    from fmnist_grid import default_data_root

    rates = measure(args.data_root or default_data_root())
    print("images per CPU-second, one thread:", ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    total, lines = estimate(args.budget, rates, args.overhead, args.seeds)
    print("\n".join(lines))
    print(
        f"--budget {args.budget}: {total / 3600:.1f} CPU-hours, about {total / 3600 / args.jobs:.1f} h "
        f"on {args.jobs} parallel jobs"
    )


if __name__ == "__main__":
    main()
