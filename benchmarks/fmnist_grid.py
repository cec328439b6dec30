"""The Fashion-MNIST grid: every method of recipes/fmnist/ through the real pipeline, over seeds.

Per seed, the dense model is adversarially pretrained once (``robprune pretrain``, cached in
``RESULTS/pretrain/seed<k>/``) and every cell of that seed starts from it (``model.checkpoint``),
so methods are compared on the same pretrained weights. Each cell is one ``robprune run`` in its own
folder ``RESULTS/cells/<cell>/seed<k>/``, followed by PGD-50 with random start on the shipped
``model.onnx`` (crafted on its torch twin, classified by onnxruntime). ``results.json`` collects one
record per cell and seed and is rewritten after each one: rerunning the same command skips the
completed cells, so a grid can continue another day or on another machine. ``table.md`` and
``grid.png`` are rebuilt from it (``--report-only`` does just that).

Key cells (95/99% unstructured, 50/75% MACs) run on every seed; the others on the first seed only
(``--all-seeds`` runs them all). Every figure comes from the test split except the ``val`` ones;
``--sweep`` chooses hyper-parameters on the validation split only (the test split is never
evaluated: ``data.eval_split=val``), every variant on the first two seeds so that the choice can use
the standard error of the paired difference from the default, and writes ``RESULTS/sweep.json``,
whose choices later grid runs in the same results folder apply.

Power first: before a grid runs it prints, per claim, the smallest paired difference its seeds and
test examples can detect at 80% power, with the sd measured by a pilot (``--pilot``, by default the
committed cpu-short grid); ``table.md`` opens with the same calculation on its own results, then
gives each claim its paired interval, exact McNemar p-value and verdict (benchmarks/fmnist_claims.py).

    python benchmarks/fmnist_grid.py --budget smoke                 # minutes: the whole grid, tiny
    python benchmarks/fmnist_grid.py --budget cpu --jobs 2          # 2 cores, about 5 hours
    python benchmarks/fmnist_grid.py --budget gpu --jobs 1          # one GPU, the recipes' own budgets
    python benchmarks/fmnist_grid.py --budget cpu --sweep           # validation sweep, then --write-recipes
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "fmnist"
KEY_CELLS = ("s2ap_u95", "s2ap_u99", "hydra_u95", "hydra_u99", "mrpf_50", "mrpf_75", "l1_filter_50", "l1_filter_75")
PRETRAIN_RECIPE = "hydra_u95"  # any grid recipe: they share data, model, attack and pretraining


@dataclass(frozen=True)
class Budget:
    """Overrides that size the grid for a machine; ``per_algorithm`` adds to ``common``."""

    description: str
    common: tuple[str, ...]
    per_algorithm: dict[str, tuple[str, ...]]
    jobs: int
    threads: int
    pgd50_steps: int = 50


_SMOKE_SEARCH = ("compression.config.epochs=2",)
_CPU_SEARCH = ("compression.config.epochs=5",)
BUDGETS = {
    "smoke": Budget(
        "minutes: 256 training images, one or two epochs per stage, tiny evaluation (proves the grid runs)",
        (
            "data.train_subset=256",
            "data.val_size=128",
            "data.batch_size=64",
            "attack.train_steps=2",
            "attack.eval_steps=5",
            "attack.val_steps=3",
            "pretrain.epochs=1",
            "finetune.epochs=1",
            "evaluate.num_examples=128",
            "evaluate.square_queries=20",
            "evaluate.square_examples=32",
            "evaluate.providers=[cpu]",
            "evaluate.latency.repeats=3",
            "evaluate.latency.warmup=1",
        ),
        {
            "s2ap": (*_SMOKE_SEARCH, "compression.config.warmup_epochs=1"),
            "hydra": _SMOKE_SEARCH,
            "mrpf": ("compression.config.calibration_size=64", "finetune.bn_recalibration_batches=2"),
            "l1_filter": ("finetune.bn_recalibration_batches=2",),
        },
        jobs=2,
        threads=1,
        pgd50_steps=10,
    ),
    "cpu": Budget(
        "2 CPU cores: 12,000 training images (of the 59,000 left after a 1,000-image validation split), "
        "batch 64, PGD-7 training, pretrain 10 epochs, mask search 5 (1 warm-up), fine-tune 4; 1,000 test images",
        (
            "data.train_subset=12000",
            "data.val_size=1000",
            "data.batch_size=64",
            "attack.train_steps=7",
            "pretrain.epochs=10",
            "finetune.epochs=4",
            "evaluate.num_examples=1000",
            "evaluate.square_queries=300",
            "evaluate.square_examples=300",
            "evaluate.providers=[cpu]",
            "evaluate.latency.repeats=10",
        ),
        {
            "s2ap": (*_CPU_SEARCH, "compression.config.warmup_epochs=1"),
            "hydra": _CPU_SEARCH,
            "mrpf": ("compression.config.calibration_size=256", "finetune.bn_recalibration_batches=20"),
            "l1_filter": ("finetune.bn_recalibration_batches=20",),
        },
        jobs=2,
        threads=1,
    ),
    "cpu-short": Budget(
        "2 CPU cores, about 2 hours: 6,000 training images (of the 59,000 left after a 1,000-image validation "
        "split), batch 64, PGD-7 training, pretrain 5 epochs, mask search 2 (1 warm-up), fine-tune 2; "
        "400 test images, AutoAttack-fast (Square 300 queries), attack-failure indicators on 50",
        (
            "data.train_subset=6000",
            "data.val_size=1000",
            "data.batch_size=64",
            "attack.train_steps=7",
            "pretrain.epochs=5",
            "finetune.epochs=2",
            "evaluate.num_examples=400",
            "evaluate.square_queries=300",
            "evaluate.curve_steps=0",
            "evaluate.indicator_examples=50",
            "evaluate.providers=[cpu]",
            "evaluate.latency.repeats=10",
        ),
        {
            "s2ap": ("compression.config.epochs=2", "compression.config.warmup_epochs=1"),
            "hydra": ("compression.config.epochs=2",),
            "mrpf": ("compression.config.calibration_size=256", "finetune.bn_recalibration_batches=20"),
            "l1_filter": ("finetune.bn_recalibration_batches=20",),
        },
        jobs=2,
        threads=1,
    ),
    "gpu": Budget(
        "one GPU: the recipes as they are (55,000 training images, 5,000 validation, PGD-10 training, "
        "pretrain 50, mask search 20 (5 warm-up), fine-tune 25; the whole 10,000-image test split)",
        (),
        {},
        jobs=1,
        threads=0,
    ),
}

# --sweep: one cell per algorithm, the first SWEEP_SEEDS seeds, chosen on validation PGD accuracy. ("x", k)
# multiplies the budget's value (epoch counts scale with the budget). Each baseline gets as many variants
# as its method.
SWEEP_SEEDS = 2
"""Seeds every sweep variant runs on: the fewest whose paired difference from the default has a spread."""
PILOT = REPO / "benchmarks" / "results" / "fmnist_cpu_short" / "results.json"
"""The committed grid whose paired sd the power plan uses by default."""
FMNIST_TEST_EXAMPLES = 10_000
"""The test split's size: a larger evaluate.num_examples evaluates the whole split."""
SWEEPS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "s2ap": (
        "s2ap_u95",
        [
            {},
            {"compression.config.gamma": 0.01},
            {"compression.config.gamma": 0.03},
            {"compression.config.warmup_epochs": ("x", 2)},
            {"compression.config.lr": 0.05},
            {"compression.config.lr": 0.2},
            {"compression.config.epochs": ("x", 2), "compression.config.warmup_epochs": ("x", 2)},
        ],
    ),
    "hydra": (
        "hydra_u95",
        [
            {},
            {"compression.config.lr": 0.03},
            {"compression.config.lr": 0.05},
            {"compression.config.lr": 0.2},
            {"compression.config.lr": 0.4},
            {"compression.config.score_init": "kaiming"},
            {"compression.config.epochs": ("x", 2)},
        ],
    ),
    "mrpf": (
        "mrpf_50",
        [
            {},
            {"compression.config.estimator": "activation"},
            {"compression.config.probe_ratio": 0.3},
            {"compression.config.probe_ratio": 0.7},
            {"compression.config.calibration_size": ("x", 0.25)},
            {"compression.config.calibration_size": ("x", 4)},
        ],
    ),
    "l1_filter": (
        "l1_filter_50",
        [
            {},
            {"compression.config.max_ratio": 0.8},
            {"compression.config.max_ratio": 0.95},
            {"compression.config.round_to": 1},
            {"compression.config.round_to": 16},
            {"finetune.bn_recalibration_batches": 0},
        ],
    ),
}


@dataclass(frozen=True)
class Cell:
    """One recipe of ``recipes/fmnist/``."""

    name: str

    @property
    def recipe(self) -> Path:
        return RECIPES / f"{self.name}.yaml"

    @property
    def algorithm(self) -> str:
        return self.name.rsplit("_", 1)[0]

    @property
    def key(self) -> bool:
        return self.name in KEY_CELLS


def all_cells() -> list[Cell]:
    return [Cell(p.stem) for p in sorted(RECIPES.glob("*.yaml"))]


@dataclass
class Task:
    """One subprocess: a pretraining (``cell is None``) or a cell run, for one seed."""

    seed: int
    out: Path
    cell: Cell | None = None
    overrides: list[str] = field(default_factory=list)
    record_key: str = ""
    label: dict[str, Any] = field(default_factory=dict)

    @property
    def is_pretrain(self) -> bool:
        return self.cell is None


def default_data_root() -> Path | None:
    """``$FASHION_MNIST_ROOT``, else the shared copy beside the checkout, else ``None`` (the recipes
    then read Debian's location)."""
    if os.environ.get("FASHION_MNIST_ROOT"):
        return Path(os.environ["FASHION_MNIST_ROOT"])
    shared = REPO.parent / "shared" / "datasets" / "fashion-mnist"
    return shared if shared.is_dir() else None


def base_overrides(budget: Budget, algorithm: str, data_root: Path | None) -> list[str]:
    sets = [*budget.common, *budget.per_algorithm.get(algorithm, ()), "tracking.enabled=false"]
    if data_root is not None:
        sets.append(f"data.root={data_root}")
    return sets


def resolve_variant(variant: dict[str, Any], recipe: Path, sets: list[str]) -> list[str]:
    """``--set`` items of a sweep variant; ``("x", k)`` multiplies the value the budget gives the field."""
    from robprune_deploy.recipe import load_recipe, recipe_to_dict

    document = recipe_to_dict(load_recipe(recipe, sets))
    resolved = []
    for path, value in variant.items():
        if isinstance(value, tuple):
            node: Any = document
            for part in path.split("."):
                node = node[part]
            scaled = node * value[1]
            value = max(1, round(scaled)) if isinstance(node, int) else scaled
        resolved.append(f"{path}={json.dumps(value)}")
    return resolved


def subprocess_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "plugins"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def execute(task: Task, budget: Budget) -> dict[str, Any]:
    """Run ``task`` in a child process (``--worker``); returns its record (``status`` done or failed)."""
    task.out.mkdir(parents=True, exist_ok=True)
    recipe = RECIPES / f"{PRETRAIN_RECIPE if task.cell is None else task.cell.name}.yaml"
    command = [sys.executable, __file__, "--worker", "pretrain" if task.is_pretrain else "run", str(recipe)]
    pgd_steps = 0 if task.label.get("task") == "sweep" else budget.pgd50_steps  # the sweep reads validation only
    command += ["--out", str(task.out), "--pgd-steps", str(pgd_steps)]
    for item in task.overrides:
        command += ["--set", item]
    start = time.perf_counter()
    log = task.out / "worker.log"
    with open(log, "w") as handle:
        child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=subprocess_env(budget.threads))
        _, status, usage = os.wait4(child.pid, 0)  # the child's own CPU time, robust to a busy machine
        child.returncode = code = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    record: dict[str, Any] = {
        **task.label,
        "seed": task.seed,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "out": str(task.out),
    }
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        return {**record, "status": "failed", "error": " | ".join(tail)}
    from fmnist_results import cell_record, pretrain_record

    figures = pretrain_record(task.out) if task.is_pretrain else cell_record(task.out)
    return {**record, **figures, "status": "done"}


class Results:
    """``results.json``: budget, hardware, provenance (benchmarks/provenance.py) and one record per task,
    written atomically after each; ``renderer`` names the function the docs render its tables with."""

    def __init__(self, path: Path, budget: str) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        if self.data and self.data.get("budget") != budget:
            raise SystemExit(f"error: {path} holds the {self.data.get('budget')!r} budget, not {budget!r}")
        self.data.setdefault("budget", budget)
        self.data.setdefault("records", {})
        self.data.setdefault("renderer", "fmnist_tables:grid_tables")

    def done(self, key: str) -> bool:
        return self.data["records"].get(key, {}).get("status") == "done"

    def put(self, key: str, record: dict[str, Any], hardware: dict[str, Any]) -> None:
        from provenance import provenance

        from robprune_deploy.atomic import write_json

        self.data["records"][key] = record
        self.data["hardware"] = hardware
        self.data["provenance"] = provenance()
        write_json(self.path, self.data)


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def schedule(tasks: list[Task], budget: Budget, results: Results, jobs: int) -> None:
    """Run ``tasks`` on ``jobs`` workers; a cell starts once its seed's pretrained model exists."""
    machine = hardware()
    pending = [t for t in tasks if not results.done(t.record_key)]
    skipped = len(tasks) - len(pending)
    print(f"{len(pending)} tasks to run, {skipped} already in {results.path}", flush=True)
    pretrained = {t.seed for t in tasks if t.is_pretrain and results.done(t.record_key)}
    failed_seeds: set[int] = set()
    running: dict[Future[dict[str, Any]], Task] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            while len(running) < jobs:
                ready = next((t for t in pending if t.is_pretrain or t.seed in pretrained), None)
                if ready is None:
                    break
                pending.remove(ready)
                running[pool.submit(execute, ready, budget)] = ready
            if not running:  # only cells whose pretraining failed are left
                for task in pending:
                    results.put(
                        task.record_key,
                        {**task.label, "seed": task.seed, "status": "failed", "error": "pretraining failed"},
                        machine,
                    )
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                record = future.result()
                results.put(task.record_key, record, machine)
                if task.is_pretrain:
                    (pretrained if record["status"] == "done" else failed_seeds).add(task.seed)
                    pending = [t for t in pending if t.seed not in failed_seeds]
                print(
                    f"[{time.strftime('%H:%M:%S')}] {task.record_key}: {record['status']} in "
                    f"{record['seconds']:.0f} s {record.get('error', '')}",
                    flush=True,
                )


def pretrain_task(results_dir: Path, seed: int, sets: list[str]) -> Task:
    out = results_dir / "pretrain" / f"seed{seed}"
    return Task(seed, out, None, [*sets, f"seed={seed}"], f"pretrain/seed{seed}", {"task": "pretrain"})


def checkpoint_of(results_dir: Path, seed: int) -> Path:
    return results_dir / "pretrain" / f"seed{seed}" / "pretrained.pt"


def grid_tasks(args: argparse.Namespace, budget: Budget, cells: list[Cell]) -> list[Task]:
    chosen = json.loads((args.results / "sweep.json").read_text()) if (args.results / "sweep.json").is_file() else {}
    tasks = [pretrain_task(args.results, s, base_overrides(budget, "hydra", args.data_root)) for s in args.seeds]
    for seed in args.seeds:
        for cell in sorted(cells, key=lambda c: not c.key):
            if not cell.key and not args.all_seeds and seed != args.seeds[0]:
                continue
            sweep = chosen.get(cell.algorithm, {}).get("chosen", [])
            sets = [*base_overrides(budget, cell.algorithm, args.data_root), *sweep]
            sets += [f"seed={seed}", f"model.checkpoint={checkpoint_of(args.results, seed)}"]
            out = args.results / "cells" / cell.name / f"seed{seed}"
            label = {"task": "cell", "cell": cell.name, "algorithm": cell.algorithm, "key": cell.key, "sweep": sweep}
            tasks.append(Task(seed, out, cell, sets, f"{cell.name}/seed{seed}", label))
    return tasks


def sweep_tasks(args: argparse.Namespace, budget: Budget) -> list[Task]:
    seeds = args.seeds[:SWEEP_SEEDS]
    if len(seeds) < SWEEP_SEEDS:
        raise SystemExit(f"error: --seeds: the sweep pairs every variant with the default on {SWEEP_SEEDS} seeds")
    tasks = [pretrain_task(args.results, seed, base_overrides(budget, "hydra", args.data_root)) for seed in seeds]
    for algorithm, (cell_name, variants) in SWEEPS.items():
        cell = Cell(cell_name)
        if args.cells and not any(fnmatch.fnmatch(algorithm, p) or fnmatch.fnmatch(cell_name, p) for p in args.cells):
            continue
        base = base_overrides(budget, algorithm, args.data_root)
        for index, variant in enumerate(variants):
            extra = resolve_variant(variant, cell.recipe, base)
            label = {
                "task": "sweep",
                "cell": cell_name,
                "algorithm": algorithm,
                "variant": index,
                "sets": extra,
                "relative": {k: list(v) if isinstance(v, tuple) else v for k, v in variant.items()},
            }
            for seed in seeds:
                sets = [*base, *extra, f"seed={seed}", f"model.checkpoint={checkpoint_of(args.results, seed)}"]
                # the test split is never touched; the choice reads the training's validation PGD
                # (val.pgd_acc), so the final evaluation is only a light PGD on validation images
                sets += ["data.eval_split=val", "evaluate.attacks=pgd", "evaluate.num_examples=200"]
                sets += ["evaluate.square_queries=0", "evaluate.indicator_examples=0"]
                out = args.results / "sweep" / algorithm / f"v{index}" / f"seed{seed}"
                tasks.append(Task(seed, out, cell, sets, f"sweep/{algorithm}/v{index}/seed{seed}", label))
    return tasks


def print_power_plan(args: argparse.Namespace, budget: Budget) -> None:
    """Power first: what the planned seeds and test examples can detect, with the pilot's sd."""
    from fmnist_claims import power_plan
    from fmnist_results import cells_of, headline_metric

    from robprune_deploy.recipe import load_recipe

    if not args.pilot.is_file():
        print(f"power plan: no pilot results at {args.pilot}", flush=True)
        return
    pilot = json.loads(args.pilot.read_text())
    grouped = cells_of(pilot.get("records", {}))
    metric, label = headline_metric(grouped)
    recipe = load_recipe(RECIPES / f"{PRETRAIN_RECIPE}.yaml", base_overrides(budget, "hydra", args.data_root))
    examples = min(recipe.evaluate.num_examples, FMNIST_TEST_EXAMPLES)
    print(power_plan(grouped, pilot.get("budget", "?"), len(args.seeds), examples, metric, label), flush=True)


def worker(argv: list[str]) -> int:
    """In the child process: the real CLI (``robprune pretrain`` or ``run``), then PGD on the ONNX model."""
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["pretrain", "run"])
    parser.add_argument("recipe")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pgd-steps", type=int, default=50)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    from robprune_deploy.cli.main import main

    sets = [x for item in args.overrides for x in ("--set", item)]
    code = main([args.stage, args.recipe, "--out", str(args.out), "--resume", "--quiet", *sets])
    if code == 1 and args.stage == "run" and (args.out / "summary.json").is_file():
        code = 0  # a refused gate is a result of the cell (gate_passed in its record), not a failure
    if code != 0 or args.stage == "pretrain" or args.pgd_steps == 0:
        return code
    from fmnist_results import onnx_pgd

    onnx_pgd(args.out, args.pgd_steps)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--budget", choices=list(BUDGETS), default="cpu")
    parser.add_argument("--results", type=Path, help="results folder (default runs/fmnist_grid_<budget>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cells", nargs="+", help="cell names or patterns, e.g. s2ap_u95 'mrpf_*' (default: all)")
    parser.add_argument("--all-seeds", action="store_true", help="run the non-key cells on every seed too")
    parser.add_argument("--jobs", type=int, help="cells run in parallel (default: the budget's)")
    parser.add_argument("--data-root", type=Path, default=default_data_root(), help="Fashion-MNIST IDX folder")
    parser.add_argument("--sweep", action="store_true", help="choose hyper-parameters on validation")
    parser.add_argument("--write-recipes", action="store_true", help="write sweep.json's choices into recipes/fmnist/")
    parser.add_argument("--report-only", action="store_true", help="rebuild table.md and grid.png from results.json")
    parser.add_argument("--tracking-uri", help="log the grid's figures and files to this MLflow store")
    parser.add_argument("--pilot", type=Path, default=PILOT, help="results.json whose paired sd the power plan uses")
    args = parser.parse_args(argv)
    args.results = args.results or REPO / "runs" / f"fmnist_grid_{args.budget}"
    return args


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2:])
    args = parse_args(argv)
    budget = BUDGETS[args.budget]
    args.results.mkdir(parents=True, exist_ok=True)
    from fmnist_results import choose_sweep, log_to_mlflow, refresh, write_recipes, write_report

    if args.write_recipes:
        write_recipes(args.results / "sweep.json", RECIPES)
        return 0
    name = "sweep_results.json" if args.sweep else "results.json"
    results = Results(args.results / name, args.budget)
    if not args.report_only:
        print(f"budget {args.budget}: {budget.description}", flush=True)
        if not args.sweep:
            print_power_plan(args, budget)
        if args.sweep:
            tasks = sweep_tasks(args, budget)
        else:
            cells = [c for c in all_cells() if not args.cells or any(fnmatch.fnmatch(c.name, p) for p in args.cells)]
            tasks = grid_tasks(args, budget, cells)
        schedule(tasks, budget, results, args.jobs or budget.jobs)
    if args.sweep:
        choose_sweep(results.data, args.results / "sweep.json", SWEEPS)
        return 0
    refresh(results.data["records"])
    files = write_report(results.data, args.results, budget.description, budget.pgd50_steps)
    if args.tracking_uri:
        log_to_mlflow(results.data, files, args.tracking_uri, args.budget)
    for file in files:
        print(file)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
