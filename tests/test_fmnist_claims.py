"""The Fashion-MNIST report's claims (benchmarks/fmnist_claims.py, fmnist_results.py): power first, then
per claim the paired interval over seeds, exact McNemar on the pooled per-example outcomes and the
verdict; and the per-example outcomes the grid's own PGD evaluation stores."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from fmnist_claims import measure_claims, power_plan
from fmnist_results import cell_record, cells_of, onnx_pgd, render_table

from robprune_deploy.statistics import pack_outcomes, paired_difference, paired_proportions, unpack_outcomes, verdict

EXAMPLES = 500


def _cell(cell: str, seed: int, autoattack: float, outcomes: np.ndarray | None, subset: str = "a") -> dict[str, Any]:
    record: dict[str, Any] = {
        "task": "cell",
        "status": "done",
        "cell": cell,
        "algorithm": cell.rsplit("_", 1)[0],
        "seed": seed,
        "autoattack": autoattack,
        "pgd50": None if outcomes is None else float(outcomes.mean()),
        "sparsity": 0.95,
        "macs_reduction": 0.95,
        "examples": EXAMPLES,
        "split": "test",
    }
    if outcomes is not None:
        stored = {"examples": len(outcomes), "subset_sha256": subset, "pgd50": pack_outcomes(outcomes)}
        record["outcomes"] = stored
    return record


def _grid() -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """Three seeds of S2AP and HYDRA at 95%, S2AP right on 30 more examples per seed; the 99% cells
    without stored outcomes (an old results file)."""
    rng = np.random.default_rng(0)
    records: dict[str, Any] = {}
    outcomes: dict[str, list[np.ndarray]] = {"s2ap": [], "hydra": []}
    for seed, (s2ap, hydra) in enumerate(((0.660, 0.650), (0.655, 0.640), (0.672, 0.655))):
        base = rng.random(EXAMPLES) < 0.6
        better = base.copy()
        better[np.flatnonzero(~base)[:30]] = True
        outcomes["s2ap"].append(better)
        outcomes["hydra"].append(base)
        records[f"s2ap_u95/seed{seed}"] = _cell("s2ap_u95", seed, s2ap, better)
        records[f"hydra_u95/seed{seed}"] = _cell("hydra_u95", seed, hydra, base)
        records[f"s2ap_u99/seed{seed}"] = _cell("s2ap_u99", seed, 0.60 + 0.01 * seed, None)
        records[f"hydra_u99/seed{seed}"] = _cell("hydra_u99", seed, 0.61, None)
    return {"budget": "smoke", "hardware": {}, "records": records}, outcomes


def test_the_report_opens_with_power_then_gives_each_claim_its_interval_mcnemar_and_verdict() -> None:
    data, outcomes = _grid()
    table = render_table(data, "test budget", 50)
    assert table.index("## Power") < table.index("## Claims") < table.index("## Accuracy per cell")

    claims = {c.name: c for c in measure_claims(cells_of(data["records"]), "autoattack")}
    u95 = claims["s2ap − hydra u95"]
    expected = paired_difference([0.660, 0.655, 0.672], [0.650, 0.640, 0.655])
    assert u95.paired == expected and u95.seeds == (0, 1, 2)
    pooled = paired_proportions(np.concatenate(outcomes["s2ap"]), np.concatenate(outcomes["hydra"]))
    assert u95.pooled == pooled and pooled.candidate_only == 90 and pooled.baseline_only == 0
    assert u95.verdict == verdict(100 * expected.low, 100 * expected.high, 1.0)
    row = next(line for line in table.splitlines() if line.startswith("| s2ap − hydra u95 | +1.0 | 3 | +1.4 ["))
    assert table.index(row) > table.index("## Claims")
    assert f"| {pooled.p_value:.3g} |" in row and f"**{u95.verdict.word}**" in row

    u99 = claims["s2ap − hydra u99"]
    assert u99.pooled is None and u99.paired is not None
    claims_section = table[table.index("## Claims") :].splitlines()
    assert "n/a (not stored)" in next(line for line in claims_section if line.startswith("| s2ap − hydra u99"))


def test_only_seeds_measured_on_the_same_examples_are_pooled() -> None:
    data, outcomes = _grid()
    data["records"]["hydra_u95/seed2"]["outcomes"]["subset_sha256"] = "another subset"
    (claim,) = (c for c in measure_claims(cells_of(data["records"]), "autoattack") if c.setting == "u95")
    assert claim.pooled is not None and claim.pooled.n == 2 * EXAMPLES
    assert claim.pooled == paired_proportions(
        np.concatenate(outcomes["s2ap"][:2]), np.concatenate(outcomes["hydra"][:2])
    )


def test_one_seed_is_inconclusive_whatever_it_shows() -> None:
    records = {
        "s2ap_u95/seed0": _cell("s2ap_u95", 0, 0.75, None),
        "hydra_u95/seed0": _cell("hydra_u95", 0, 0.60, None),
    }
    (claim,) = measure_claims(cells_of(records), "autoattack")
    assert claim.paired is None and claim.verdict.word == "inconclusive"


def test_the_power_plan_reads_the_pilots_sd() -> None:
    data, _ = _grid()
    pilot = cells_of(data["records"])
    plan = power_plan(pilot, "smoke", 5, 10_000, "autoattack", "AutoAttack")
    sd = paired_difference([0.660, 0.655, 0.672], [0.650, 0.640, 0.655]).sd
    row = next(line for line in plan.splitlines() if line.startswith("| s2ap − hydra u95"))
    assert f"| 5 | {100 * sd:.1f} |" in row and "| 50,000 |" in row
    assert "(bound)" in next(line for line in plan.splitlines() if line.startswith("| s2ap − hydra u99"))


def test_the_grids_pgd_stores_per_example_outcomes_that_give_its_figure(
    digits_run: dict[str, Any], tmp_path: Path
) -> None:
    from robprune_deploy.attacks import ThreatModel
    from robprune_deploy.evaluation import evaluate_onnx
    from robprune_deploy.evaluation.twin import torch_twin
    from robprune_deploy.export import load_onnx
    from robprune_deploy.pipeline import RunContext
    from robprune_deploy.recipe import load_recipe

    out = tmp_path / "cell"
    shutil.copytree(digits_run["out"], out)
    figures = onnx_pgd(out, 3)
    stored = figures["outcomes"]
    robust = unpack_outcomes(stored["pgd50"], stored["examples"])
    clean = unpack_outcomes(stored["clean"], stored["examples"])
    assert stored["examples"] == figures["pgd50_examples"] == len(robust) > 0
    assert figures["pgd50_acc"] == robust.mean() <= clean.mean()
    assert json.loads((out / "pgd50.json").read_text()) == figures
    assert cell_record(out)["outcomes"] == stored
    # the same figure as the pipeline's own evaluation of PGD with the same threat and seed
    recipe = load_recipe(out / "recipe.yaml")
    model = out / "model.onnx"
    reference = evaluate_onnx(
        model,
        RunContext(recipe, out, show_progress=False).eval_subset_batches(),
        torch_model=torch_twin(load_onnx(model)),
        threat=ThreatModel(recipe.attack.eps, recipe.attack.step_size, 3, random_start=True),
        providers=recipe.evaluate.providers,
        seed=recipe.evaluate.subset_seed,
        attacks="pgd",
    )
    assert reference.pgd_acc == figures["pgd50_acc"]
    assert reference.clean_acc == clean.mean()
