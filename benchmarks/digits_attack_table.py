"""PGD-20 against AutoAttack on the shipped digits recipes, measured on their ONNX files.

Runs every ``recipes/digits_*.yaml`` through ``robprune run`` (all share the same pretrained model,
trained once and passed as ``model.checkpoint``), then evaluates ``dense.onnx`` and ``model.onnx``
of each run under onnxruntime with three protocols on the recipe's fixed 450-example subset:
PGD-20, ``autoattack-fast`` and the standard ``autoattack``. Prints a Markdown table and writes
``digits_attack_table.json``; finished recipes are skipped when the script is run again.

    python benchmarks/digits_attack_table.py --out runs/attack_table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from robprune_deploy.cli.main import main as robprune
from robprune_deploy.evaluation.twin import torch_twin
from robprune_deploy.export import load_onnx
from robprune_deploy.gate.measure import measure_onnx
from robprune_deploy.pipeline import RunContext
from robprune_deploy.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ("pgd", "autoattack-fast", "autoattack")


def _evaluate(recipe_file: Path, onnx_file: Path, protocol: str, scratch: Path) -> dict[str, float | None]:
    recipe = load_recipe(recipe_file, [f"evaluate.attacks={protocol}", "evaluate.curve_steps=0"])
    ctx = RunContext(recipe, scratch, show_progress=False)
    start = time.perf_counter()
    result = measure_onnx(recipe, onnx_file, ctx.eval_subset_batches(), torch_twin(load_onnx(onnx_file)))
    return {
        "clean": result.clean_acc,
        "pgd20": result.pgd_acc,
        "robust": result.autoattack_acc if protocol != "pgd" else result.square_acc,
        "seconds": time.perf_counter() - start,
        **{f"indicator.{k}": v.value for k, v in result.indicators.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/attack_table"))
    parser.add_argument("--recipes", nargs="*", type=Path, default=sorted((ROOT / "recipes").glob("digits_*.yaml")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table_file = args.out / "digits_attack_table.json"
    table: dict[str, dict] = json.loads(table_file.read_text()) if table_file.is_file() else {}
    first = args.out / args.recipes[0].stem
    pretrained = first / "pretrained.pt"
    for recipe_file in args.recipes:
        name = recipe_file.stem
        if name in table:
            continue
        run_dir = args.out / name
        if not (run_dir / "summary.json").is_file():
            sets = ["--set", "tracking.enabled=false", "--set", "evaluate.curve_steps=0"]
            if pretrained.is_file():
                sets += ["--set", f"model.checkpoint={pretrained}"]
            assert robprune(["run", str(recipe_file), "--out", str(run_dir), "--quiet", *sets]) == 0
        row: dict[str, dict] = {}
        for model in ("dense", "model"):
            for protocol in PROTOCOLS:
                row[f"{model}/{protocol}"] = _evaluate(
                    recipe_file, run_dir / f"{model}.onnx", protocol, args.out / "tmp"
                )
        table[name] = row
        table_file.write_text(json.dumps(table, indent=2))
    print("| recipe | model | clean | PGD-20 | AutoAttack fast | AutoAttack standard | PGD-20 minus standard |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, row in table.items():
        for model in ("dense", "model"):
            pgd, fast, std = (row[f"{model}/{p}"] for p in PROTOCOLS)
            gap = 100 * (pgd["pgd20"] - std["robust"])
            print(
                f"| {name} | {'dense' if model == 'dense' else 'pruned'} | {100 * pgd['clean']:.1f} | "
                f"{100 * pgd['pgd20']:.1f} | {100 * fast['robust']:.1f} | {100 * std['robust']:.1f} | {gap:.1f} |"
            )


if __name__ == "__main__":
    main()
