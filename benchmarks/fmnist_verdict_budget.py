"""The verdict's budget: each trial's CPU cost from throughput measured on one thread, and the total.

Measures, in CPU seconds of this process on one thread (``time.process_time``: robust to a shared
machine, and the wall time of an idle core), every kind of work a verdict trial does, through the
project's own code with the verdict recipes' settings: a mask-search epoch of HYDRA and of S2AP
(per image, and per epoch: the calibration, sharpness and Hessian measurements do not grow with the
images), a fine-tuning epoch (PGD-AT and AWP on fmnist_cnn at 99%; TRADES on resnet20 pruned to 75% and
90% of the MACs), validation PGD-10, MRS, and the evaluation of the shipped model (clean, parity and
PGD-20 on the ONNX model, AutoAttack-fast, the attack-failure indicators) and of the torch models. A
trial costs its recipe's epochs and sizes times those rates (:func:`trial_cost`), plus a fixed cost
per trial (process start, data, ONNX export, latency, plots, MLflow): ``--overhead``, the CPU seconds
of a smoke trial minus its modelled part.

Attacks cost more on a more robust model (more examples survive to the later attacks), so the rates
are measured on the shipped start models when they exist, else on stand-ins trained here for a few
epochs of FGSM-RS (recorded as such: measure again with the start models before the verdict).

    python benchmarks/fmnist_verdict_budget.py --fmnist-root ../shared/datasets/fashion-mnist --write
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RECIPES = REPO / "recipes" / "fmnist_verdict"
START_MODELS = HERE / "start_models"
OUT = HERE / "results" / "fmnist_verdict" / "budget.json"
CORES = 2
"""The machine the budget is for: 2 cores, each running one single-threaded worker."""
UNSTRUCTURED = ("hydra", "s2ap")


def cpu_seconds(work: Callable[[], Any]) -> tuple[float, Any]:
    """CPU seconds of ``work()`` in this process, and what it returned."""
    start = time.process_time()
    result = work()
    return time.process_time() - start, result


def say(text: str) -> None:
    print(f"[{time.process_time():7.0f} CPU s] {text}", file=sys.stderr, flush=True)


class Bench:
    """The data, recipes and start models the measurements share."""

    def __init__(self, root: Path | None, images: int, eval_images: int, stand_in_epochs: int) -> None:
        from robprune_deploy.data import build_dataset
        from robprune_deploy.recipe import load_recipe

        torch.set_num_threads(1)
        self.root = root
        self.recipe = lambda name, *sets: load_recipe(RECIPES / f"{name}.yaml", [*self._root(), *sets])
        cnn = self.recipe("hydra")
        d = cnn.data
        self.data = build_dataset(d.name, d.root, d.image_size, d.augment)
        self.images, self.eval_images = images, eval_images
        self.device = torch.device("cpu")
        self.threat = cnn.attack.threat()
        self.stand_ins: list[str] = []
        self.models = {
            "fmnist_cnn": self._start_model(cnn, "fmnist_cnn", stand_in_epochs),
            "resnet20": self._start_model(self.recipe("l1_filter"), "resnet20", stand_in_epochs),
        }

    def _root(self) -> list[str]:
        return [f"data.root={self.root}"] if self.root is not None else []

    def loader(self, n: int, batch: int = 128) -> Callable[[int], Any]:
        from robprune_deploy.data import make_loader

        subset = Subset(self.data.train, range(n))
        return lambda epoch: make_loader(subset, batch, shuffle=True, epoch=epoch)

    def test_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        from robprune_deploy.data import make_loader

        return list(make_loader(Subset(self.data.test, range(self.eval_images)), 500, shuffle=False))

    def _start_model(self, recipe: Any, name: str, epochs: int) -> torch.nn.Module:
        """The shipped start model, else a stand-in: FGSM-RS for ``epochs`` on this bench's images."""
        from robprune_deploy.checkpoints import load_model_weights
        from robprune_deploy.pipeline.recipe_model import recipe_model
        from robprune_deploy.pipeline.stages import plan_of
        from robprune_deploy.training import adversarial_train

        model = recipe_model(recipe, self.data)
        shipped = START_MODELS / f"{name}.pt"
        if shipped.is_file():
            return load_model_weights(model, shipped)
        self.stand_ins.append(name)
        say(f"training a stand-in {name} ({epochs} FGSM-RS epochs on {self.images} images)")
        plan = plan_of(recipe.pretrain.model_copy(update={"epochs": epochs, "loss": "fgsm_rs", "lr": 0.05}))
        adversarial_train(model, plan, self.threat, self.loader(self.images), device=self.device, show_progress=False)
        return model

    def search(self, recipe: Any, n: int, epochs: int) -> tuple[float, Any]:
        """CPU seconds of the recipe's algorithm on ``n`` images for ``epochs`` search epochs (S2AP:
        every one an ascent epoch), and its result."""
        from robprune_deploy import ALGORITHMS, PruningContext
        from robprune_deploy.recipe import validate_algorithm_config

        config = validate_algorithm_config(recipe)
        update: dict[str, int] = {}
        if recipe.compression.algorithm in UNSTRUCTURED:
            update["epochs"] = epochs
        if recipe.compression.algorithm == "s2ap":
            update["warmup_epochs"] = 0
        algorithm = ALGORITHMS.get(recipe.compression.algorithm)(config.model_copy(update=update))
        loader = self.loader(n)
        context = PruningContext(
            train_data=loader(0),
            epoch_loader=loader,
            ratio=recipe.compression.ratio,
            threat=self.threat,
            example_inputs=self.data.test[0][0][None],
            loss=recipe.finetune.robust_loss,
            trades_beta=recipe.finetune.trades_beta,
        )
        model = copy.deepcopy(self.models[recipe.model.name])
        seconds, result = cpu_seconds(lambda: algorithm.apply(model, context))
        say(f"{recipe.compression.algorithm} {recipe.compression.ratio}, {n} images, {epochs} epochs: {seconds:.1f} s")
        return seconds, result

    def finetune(self, section: Any, model: torch.nn.Module, n: int) -> tuple[float, torch.nn.Module]:
        """CPU seconds per image of one fine-tuning epoch under ``section`` (its loss), and the model trained."""
        from robprune_deploy.pipeline.stages import plan_of
        from robprune_deploy.training import adversarial_train

        plan = plan_of(section.model_copy(update={"epochs": 1}))
        trained = copy.deepcopy(model)
        seconds, _ = cpu_seconds(
            lambda: adversarial_train(
                trained, plan, self.threat, self.loader(n), device=self.device, show_progress=False
            )
        )
        say(f"fine-tuning ({section.loss}) one epoch on {n} images: {seconds:.1f} s")
        return seconds / n, trained

    def torch_rates(self, recipe: Any, model: torch.nn.Module) -> dict[str, float]:
        """Per image: the torch model's PGD-``eval_steps`` figure and validation PGD-``val_steps``."""
        from robprune_deploy.training import evaluate_robustness

        batches, attack = self.test_batches(), recipe.attack
        figures = {}
        for key, steps in (("torch_pgd_per_image", attack.eval_steps), ("val_pgd_per_image", attack.val_steps)):
            seconds, _ = cpu_seconds(lambda s=steps: evaluate_robustness(model, batches, self.device, attack.threat(s)))
            figures[key] = seconds / self.eval_images
        return figures

    def onnx_rates(self, recipe: Any, model: torch.nn.Module, folder: Path) -> dict[str, float]:
        """The shipped model's evaluation: per image clean + parity + PGD and AutoAttack-fast; the
        indicators' fixed cost."""
        from robprune_deploy.evaluation import evaluate_onnx
        from robprune_deploy.export import export_onnx
        from robprune_deploy.gate.measure import ensemble_budget

        model = model.eval()
        path = export_onnx(model, folder / f"{recipe.model.name}.onnx", self.data.test[0][0][None])
        batches, attack, n = self.test_batches(), recipe.attack, self.eval_images
        common = {"torch_model": model, "threat": attack.threat(attack.eval_steps), "providers": ["cpu"]}
        pgd, _ = cpu_seconds(lambda: evaluate_onnx(path, batches, attacks="pgd", **common))
        budget = ensemble_budget(recipe.evaluate)
        ensemble, result = cpu_seconds(
            lambda: evaluate_onnx(path, batches, attacks="autoattack-fast", budget=budget, **common)
        )
        examples = recipe.evaluate.indicator_examples
        indicated, _ = cpu_seconds(
            lambda: evaluate_onnx(path, batches, attacks="pgd", indicator_examples=examples, **common)
        )
        say(
            f"{recipe.model.name}, {n} test images: PGD {pgd:.1f} s, ensemble {ensemble:.1f}, indicated {indicated:.1f}"
        )
        return {
            "onnx_pgd_per_image": pgd / n,
            "autoattack_per_image": (ensemble - pgd) / n,
            "indicators": max(indicated - pgd, 0.0),
            "robust_fraction": float(result.autoattack_acc),
        }


def measure(bench: Bench) -> dict[str, Any]:
    """Every rate :func:`trial_cost` needs, in CPU seconds."""
    from robprune_deploy.masking import fold_masks

    small, large = bench.images // 2, bench.images
    cnn: dict[str, Any] = {}
    for name in UNSTRUCTURED:
        (s1, _), (s2, result) = bench.search(bench.recipe(name), small, 1), bench.search(bench.recipe(name), large, 1)
        per = (s2 - s1) / (large - small)
        cnn[f"{name}_epoch"] = {"fixed": max(s1 - per * small, 0.0), "per_image": per}
        if name == "hydra":
            masked = result.model
    cnn["finetune_per_image"], tuned = {}, {}
    for loss in ("pgd_at", "awp"):
        section = bench.recipe("hydra", f"finetune.loss={loss}").finetune
        cnn["finetune_per_image"][loss], tuned[loss] = bench.finetune(section, masked, large)
    trained = fold_masks(tuned["pgd_at"])  # as the pipeline exports it: masks folded into the weights
    hydra = bench.recipe("hydra")
    cnn["dense"] = bench.torch_rates(hydra, bench.models["fmnist_cnn"])
    with tempfile.TemporaryDirectory() as folder:
        cnn["pruned"] = {**bench.torch_rates(hydra, trained), **bench.onnx_rates(hydra, trained, Path(folder))}
        net: dict[str, Any] = {"dense": bench.torch_rates(bench.recipe("l1_filter"), bench.models["resnet20"])}
        for ratio in (0.75, 0.9):
            l1 = bench.recipe("l1_filter", f"compression.ratio={ratio}")
            uniform, pruned = bench.search(l1, small, 0)
            mrs, _ = bench.search(bench.recipe("mrpf", f"compression.ratio={ratio}"), small, 0)
            stripped = pruned.strip()
            per_image, tuned = bench.finetune(l1.finetune, stripped, small)
            net[str(round(100 * ratio))] = {
                "mrs": max(mrs - uniform, 0.0),
                "finetune_per_image": {"trades": per_image},
                **bench.torch_rates(l1, tuned),
                **bench.onnx_rates(l1, tuned, Path(folder)),
            }
    return {"fmnist_cnn": cnn, "resnet20": net}


def trial_cost(recipe: Any, rates: dict[str, Any], overhead: float) -> dict[str, float]:
    """CPU seconds of one trial of ``recipe`` (its sweep's fixed settings and grid point applied), by part."""
    d, ev, comp, ft = recipe.data, recipe.evaluate, recipe.compression, recipe.finetune
    model = rates[recipe.model.name]
    unstructured = comp.algorithm in UNSTRUCTURED
    pruned = model["pruned"] if unstructured else model[str(round(100 * comp.ratio))]
    n, val = d.train_subset, d.val_size
    search = 0.0
    if unstructured:
        epochs, warmup = comp.config["epochs"], comp.config.get("warmup_epochs", 0)
        ascent = epochs - warmup if comp.algorithm == "s2ap" else 0
        for name, count in (("hydra", epochs - ascent), ("s2ap", ascent)):
            epoch = model[f"{name}_epoch"]
            # a per-image rate below 0 is the noise of two timings on a busy machine, not a saving
            search += count * (epoch["fixed"] + n * max(epoch["per_image"], 0.0))
    elif comp.algorithm == "mrpf":
        search = pruned["mrs"]
    loss = str(getattr(ft.loss, "value", ft.loss))
    tuning = (model if unstructured else pruned)["finetune_per_image"][loss]
    finetune = ft.epochs * (n * tuning + val * pruned["val_pgd_per_image"])
    examples = min(ev.num_examples, 10_000 if d.eval_split == "test" else val)
    torch_examples = min(ev.torch_examples or examples, examples)
    measure = torch_examples * (model["dense"]["torch_pgd_per_image"] + pruned["torch_pgd_per_image"])
    measure += val * (model["dense"]["val_pgd_per_image"] + pruned["val_pgd_per_image"])
    evaluate = examples * pruned["onnx_pgd_per_image"]
    if ev.attacks != "pgd":
        evaluate += min(ev.ensemble_examples or examples, examples) * pruned["autoattack_per_image"]
    if ev.indicator_examples:
        evaluate += pruned["indicators"]
    parts = {"search": search, "finetune": finetune, "torch and validation figures": measure, "evaluate": evaluate}
    return {**parts, "fixed": overhead, "total": sum(parts.values()) + overhead}


def budget(rates: dict[str, Any], overhead: float) -> list[dict[str, Any]]:
    """One row per sweep of the verdict: its trials, its recipe's sizes, the CPU seconds per trial."""
    import fmnist_verdict as verdict

    from robprune_deploy.recipe import load_recipe
    from robprune_deploy.sweep.spec import override_text
    from robprune_deploy.sweep.worker import grid_points

    rows = []
    for name in (verdict.VALIDATION, *verdict.TEST_SWEEPS):
        spec = verdict.VERDICT.spec(name)
        points = grid_points(spec)
        costs = [
            trial_cost(
                load_recipe(spec.recipe, [*spec.fixed_overrides(), *(override_text(k, v) for k, v in p.items())]),
                rates,
                overhead,
            )
            for p in points
        ]
        recipe = load_recipe(spec.recipe, spec.fixed_overrides())
        config = recipe.compression.config
        rows.append(
            {
                "sweep": name,
                "trials": len(points),
                "train_images": recipe.data.train_subset,
                "search_epochs": config.get("epochs"),
                "warmup_epochs": config.get("warmup_epochs"),
                "finetune_epochs": recipe.finetune.epochs,
                "finetune_loss": str(getattr(recipe.finetune.loss, "value", recipe.finetune.loss)),
                "split": recipe.data.eval_split,
                "seconds_per_trial": sum(c["total"] for c in costs) / len(costs),
                "parts": {k: sum(c[k] for c in costs) / len(costs) for k in costs[0] if k != "total"},
                "seconds": sum(c["total"] for c in costs),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fmnist-root", type=Path, default=None, help="folder of the four Fashion-MNIST IDX files")
    parser.add_argument("--images", type=int, default=2048, help="training images of the timed epochs")
    parser.add_argument("--eval-images", type=int, default=300, help="test images of the timed evaluations")
    parser.add_argument("--stand-in-epochs", type=int, default=3, help="FGSM-RS epochs of a stand-in start model")
    parser.add_argument("--overhead", type=float, default=60.0, help="fixed CPU seconds per trial")
    parser.add_argument("--rates", type=Path, help="reuse the rates of an earlier budget.json (no measuring)")
    parser.add_argument("--rates-out", type=Path, help="also write the measured rates to this file")
    parser.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(REPO)}")
    args = parser.parse_args()
    from fmnist_verdict_tables import BUDGET_RENDERER, budget_tables
    from provenance import provenance
    from result_tables import render_table, results_file

    from robprune_deploy.atomic import write_json

    if args.rates is not None:
        earlier = json.loads(args.rates.read_text())
        rates, stand_ins = earlier["rates"], earlier["stand_ins"]
    else:
        bench = Bench(
            args.fmnist_root.resolve() if args.fmnist_root else None,
            args.images,
            args.eval_images,
            args.stand_in_epochs,
        )
        rates, stand_ins = measure(bench), bench.stand_ins
        if args.rates_out is not None:  # kept before anything else can fail
            args.rates_out.write_text(json.dumps({"rates": rates, "stand_ins": stand_ins}, indent=1))
    document = results_file(
        provenance(),
        renderer=BUDGET_RENDERER,
        cores=CORES,
        overhead=args.overhead,
        stand_ins=stand_ins,
        rates=rates,
        sweeps=budget(rates, args.overhead),
    )
    tables = budget_tables(document)
    print(render_table(tables["budget"]))
    print(json.dumps(rates, indent=1))
    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        print(write_json(OUT, document))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
