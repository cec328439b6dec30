"""PGD-20 against AutoAttack on the shipped digits recipes, measured on their ONNX files.

Runs every ``recipes/digits_*.yaml`` through ``robprune run`` (all share the same pretrained model,
trained once and passed as ``model.checkpoint``), then evaluates ``dense.onnx`` and ``model.onnx``
of each run under onnxruntime on the recipe's fixed 450-example subset: PGD-20 and ``autoattack-fast``
as the run measured them, then the standard ``autoattack`` (and the attack-failure indicators), the
dense model once. Prints a Markdown table and writes ``digits_attack_table.json``; finished recipes
are skipped when the script is run again.

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


def _standard(recipe_file: Path, onnx_file: Path, scratch: Path) -> dict[str, float | None]:
    """Standard AutoAttack (and the indicators) on ``onnx_file``, on the recipe's fixed subset."""
    recipe = load_recipe(recipe_file, ["evaluate.attacks=autoattack", "evaluate.curve_steps=0"])
    ctx = RunContext(recipe, scratch, show_progress=False)
    start = time.perf_counter()
    result = measure_onnx(recipe, onnx_file, ctx.eval_subset_batches(), torch_twin(load_onnx(onnx_file)))
    return {
        "clean": result.clean_acc,
        "pgd20": result.pgd_acc,
        "autoattack": result.autoattack_acc,
        "seconds": time.perf_counter() - start,
        **{f"{m['name']}_acc": m["accuracy_after"] for m in result.members},
        **{f"{m['name']}_seconds": m["seconds"] for m in result.members},
        **{f"indicator.{k}": v.value for k, v in result.indicators.items()},
    }


def _fast(summary: dict, prefix: str) -> dict[str, float | None]:
    """The run's own figures (PGD-20 and AutoAttack-fast, measured by ``robprune run``)."""
    keys = ("clean_acc", "pgd_acc", "autoattack_acc", "apgd_ce_acc", "apgd_t_acc", "square_acc")
    figures = {key: summary.get(f"{prefix}{key}") for key in keys}
    figures.update(
        {k.removeprefix(prefix): v for k, v in summary.items() if k.startswith(prefix) and k.endswith("_seconds")}
    )
    return figures


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
            assert robprune(["run", str(recipe_file), "--out", str(run_dir), "--quiet", *sets]) in (0, 1)
        summary = json.loads((run_dir / "summary.json").read_text())
        row = {
            "model/fast": _fast(summary, "onnx."),
            "model/standard": _standard(recipe_file, run_dir / "model.onnx", args.out / "tmp"),
        }
        if "dense" not in table:  # every recipe starts from the same pretrained model
            table["dense"] = {
                "model/fast": _fast(summary, "onnx.dense_"),
                "model/standard": _standard(recipe_file, run_dir / "dense.onnx", args.out / "tmp"),
            }
        table[name] = row
        table_file.write_text(json.dumps(table, indent=2))
    print("| model | clean | PGD-20 | AutoAttack fast | AutoAttack standard | PGD-20 minus AA | AA seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in table.items():
        fast, std = row["model/fast"], row["model/standard"]
        gap = 100 * (std["pgd20"] - std["autoattack"])
        print(
            f"| {name} | {100 * std['clean']:.1f} | {100 * std['pgd20']:.1f} | {100 * fast['autoattack_acc']:.1f} | "
            f"{100 * std['autoattack']:.1f} | {gap:.1f} | {std['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
