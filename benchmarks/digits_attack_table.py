"""PGD-20 against AutoAttack on the shipped digits recipes, measured on their ONNX files.

Runs every ``recipes/digits_*.yaml`` through ``robprune run`` (all share the same pretrained model,
trained once and passed as ``model.checkpoint``), then evaluates ``dense.onnx`` and ``model.onnx``
of each run under onnxruntime on the recipe's fixed 450-example subset: PGD-20 and ``autoattack-fast``
as the run measured them, then the standard ``autoattack`` (and the attack-failure indicators), the
dense model once. Writes ``digits_attack_table.json`` (the figures, what each recipe prunes and the
provenance; the docs render its table with :func:`tables`) and prints the table; finished recipes
are skipped when the script is run again.

    python benchmarks/digits_attack_table.py --out runs/attack_table
    python benchmarks/digits_attack_table.py --report benchmarks/results/digits_attack_table.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from result_tables import column, render_table, table, text_column

ROOT = Path(__file__).resolve().parents[1]


def _standard(recipe_file: Path, onnx_file: Path, scratch: Path) -> dict[str, float | None]:
    """Standard AutoAttack (and the indicators) on ``onnx_file``, on the recipe's fixed subset."""
    from robprune_deploy.evaluation import Artifact
    from robprune_deploy.gate.measure import measure, twin_of
    from robprune_deploy.pipeline import RunContext
    from robprune_deploy.recipe import load_recipe

    recipe = load_recipe(recipe_file, ["evaluate.attacks=autoattack", "evaluate.curve_steps=0"])
    ctx = RunContext(recipe, scratch, show_progress=False)
    start = time.perf_counter()
    artifact = Artifact.of(onnx_file, providers=recipe.evaluate.providers)
    result = measure(recipe, artifact, ctx.eval_subset_batches(), {"twin": twin_of(onnx_file)})
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


def label(summary: dict[str, Any]) -> str:
    """What a recipe pruned, from its run's summary: ``90% unstructured``, ``51% MACs``."""
    macs = 1 - summary["macs_pruned"] / summary["macs_dense"]
    if summary["granularity"] != "channel":
        return f"{summary['sparsity']:.0%} unstructured"
    if summary["algorithm"] in ("s2ap", "hydra"):  # a channel ratio, which removes more MACs
        return f"{summary['sparsity']:.0%} channels, {macs:.0%} MACs"
    return f"{macs:.0%} MACs"


def tables(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The docs' table: PGD-20 against AutoAttack-fast and standard AutoAttack, in %, per model."""
    rows = []
    for name, row in document["models"].items():
        fast, std = row["model/fast"], row["model/standard"]
        shown = name if name == "dense" else f"`{name}` ({document['labels'][name]})"
        figures = (
            std["clean"],
            std["pgd20"],
            fast["autoattack_acc"],
            std["autoattack"],
            std["pgd20"] - std["autoattack"],
        )
        rows.append([shown, *(100 * x for x in figures)])
    one = "{:.1f}"
    columns = [text_column("model"), column("clean", one), column("PGD-20", one), column("AutoAttack-fast", one)]
    columns += [column("AutoAttack (standard)", one), column("PGD-20 minus AutoAttack", one)]
    return {"main": table(columns, rows)}


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"renderer": "digits_attack_table:tables", "labels": {}, "models": {}}
    document: dict[str, Any] = json.loads(path.read_text())
    if "models" not in document:  # the first format: the models at the top level
        document = {"renderer": "digits_attack_table:tables", "labels": {}, "models": document}
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/attack_table"))
    parser.add_argument("--recipes", nargs="*", type=Path, default=sorted((ROOT / "recipes").glob("digits_*.yaml")))
    parser.add_argument("--report", type=Path, default=None, help="only print the table of this results file")
    args = parser.parse_args()
    if args.report is not None:
        print(render_table(tables(_load(args.report))["main"]))
        return
    from provenance import provenance

    from robprune_deploy.cli.main import main as robprune

    args.out.mkdir(parents=True, exist_ok=True)
    table_file = args.out / "digits_attack_table.json"
    document = _load(table_file)
    models = document["models"]
    first = args.out / args.recipes[0].stem
    pretrained = first / "pretrained.pt"
    for recipe_file in args.recipes:
        name = recipe_file.stem
        if name in models:
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
        if "dense" not in models:  # every recipe starts from the same pretrained model
            models["dense"] = {
                "model/fast": _fast(summary, "onnx.dense_"),
                "model/standard": _standard(recipe_file, run_dir / "dense.onnx", args.out / "tmp"),
            }
        models[name] = row
        document["labels"][name] = label(summary)
        document["provenance"] = provenance()
        table_file.write_text(json.dumps(document, indent=2))
    print(render_table(tables(document)["main"]))


if __name__ == "__main__":
    main()
