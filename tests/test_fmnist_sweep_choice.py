"""The Fashion-MNIST sweep (benchmarks/fmnist_results.py): validation only, each variant paired with
the default over 2 seeds, the default kept unless beaten by more than one standard error of the paired
difference, and never a variant that is the baseline.

The rule itself is robprune_deploy.statistics.choose_variant (tested in test_statistics.py); these
tests check how the benchmark feeds it its records and writes its choice, so they load the benchmark's
module from benchmarks/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from fmnist_results import choose_sweep, write_recipes

from robprune_deploy.recipe import load_recipe

SWEEPS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "s2ap": ("s2ap_u95", [{}, {"gamma": 0.01}, {"warmup": 2}]),
    "hydra": ("hydra_u95", [{}, {"lr": 0.2}]),
}


def _records(
    tmp_path: Path, algorithm: str, variant: int, val_pgd: list[float], base: dict[str, Any], changes: dict[str, Any]
) -> list[dict[str, Any]]:
    """A sweep variant finished on seeds 0, 1, ...: its resolved recipe on disk (the ablation check
    reads it) and one record per seed, as fmnist_grid.py writes them."""
    records = []
    for seed, score in enumerate(val_pgd):
        out = tmp_path / algorithm / f"v{variant}" / f"seed{seed}"
        out.mkdir(parents=True)
        config = {**base, **changes}
        document = {"seed": seed, "compression": {"algorithm": algorithm, "config": config}}
        (out / "recipe.yaml").write_text(yaml.safe_dump(document))
        records.append(
            {
                "task": "sweep",
                "algorithm": algorithm,
                "cell": SWEEPS[algorithm][0],
                "variant": variant,
                "seed": seed,
                "sets": [f"compression.config.{k}={v}" for k, v in changes.items()],
                "relative": {},
                "val_pgd": score,
                "val_clean": 0.8,
                "val_examples": 1000,
                "status": "done",
                "out": str(out),
            }
        )
    return records


def _choose(tmp_path: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    path = tmp_path / "sweep.json"
    keyed = {f"sweep/{r['algorithm']}/v{r['variant']}/seed{r['seed']}": r for r in records}
    choose_sweep({"records": keyed}, path, SWEEPS)
    chosen: dict[str, Any] = json.loads(path.read_text())
    assert (tmp_path / "sweep.md").read_text().count("**chosen**") == len(chosen)
    return chosen


def test_a_variant_that_switches_s2ap_off_is_an_ablation_never_the_choice(tmp_path: Path) -> None:
    base = {"epochs": 2, "gamma": 0.1, "warmup_epochs": 1}
    chosen = _choose(
        tmp_path,
        [
            *_records(tmp_path, "s2ap", 0, [0.635, 0.640], base, {}),
            *_records(tmp_path, "s2ap", 1, [0.672, 0.668], base, {"gamma": 0.01}),
            *_records(tmp_path, "s2ap", 2, [0.680, 0.684], base, {"warmup_epochs": 2}),  # the best, but it is HYDRA
        ],
    )["s2ap"]
    assert chosen["chosen"] == ["compression.config.gamma=0.01"]
    variants = {v["variant"]: v for v in chosen["variants"]}
    assert variants[0].get("ablation") is None and variants[1].get("ablation") is None
    assert "no ascent epoch" in variants[2]["ablation"]
    assert variants[1]["seeds"] == [0, 1] and variants[1]["val_pgd"] == 0.67
    assert abs(variants[1]["gain"] - 0.0325) < 1e-12 and abs(variants[1]["gain_se"] - 0.0045) < 1e-12


def test_the_default_stays_unless_beaten_by_more_than_one_paired_standard_error(tmp_path: Path) -> None:
    cases = (
        ("noisy", [0.720, 0.650], []),  # +0.04 then -0.03: mean +0.005, SE 0.035
        ("steady", [0.692, 0.688], ["compression.config.lr=0.2"]),  # +0.012 +0.008: mean 0.010, SE 0.002
        ("one seed", [0.740], []),  # +0.06 on one seed: no spread, no choice (the old rule took it)
    )
    for name, challenger, expected in cases:
        folder = tmp_path / name
        records = [
            *_records(folder, "hydra", 0, [0.680, 0.680], {"lr": 0.1}, {}),
            *_records(folder, "hydra", 1, challenger, {"lr": 0.1}, {"lr": 0.2}),
        ]
        entry = _choose(folder, records)["hydra"]
        assert entry["chosen"] == expected, name
        assert entry["reason"], name


def test_chosen_values_are_written_into_the_recipes_once(tmp_path: Path) -> None:
    recipes = Path(__file__).resolve().parents[1] / "recipes" / "fmnist"
    for name in ("s2ap_u95", "hydra_u95"):
        (tmp_path / f"{name}.yaml").write_text((recipes / f"{name}.yaml").read_text())
    hydra_before = (tmp_path / "hydra_u95.yaml").read_bytes()
    sweep = tmp_path / "sweep.json"
    sweep.write_text(
        json.dumps(
            {
                "s2ap": {"relative": {"compression.config.gamma": 0.01, "compression.config.epochs": ["x", 2]}},
                "hydra": {"relative": {}},
            }
        )
    )
    for _ in range(2):  # the second call must not scale the epochs again
        write_recipes(sweep, tmp_path)
    written = load_recipe(tmp_path / "s2ap_u95.yaml")
    original = load_recipe(recipes / "s2ap_u95.yaml")
    assert written.compression.config["gamma"] == 0.01
    assert written.compression.config["epochs"] == 2 * original.compression.config["epochs"]
    assert (tmp_path / "s2ap_u95.yaml").read_text().count("Chosen on validation") == 1
    assert (tmp_path / "hydra_u95.yaml").read_bytes() == hydra_before
