"""The Fashion-MNIST sweep's choice rule (benchmarks/fmnist_results.py): validation only, a default kept
unless beaten by more than one binomial standard error, and never a variant that is the baseline."""

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


def _record(
    tmp_path: Path, algorithm: str, variant: int, val_pgd: float, base: dict[str, Any], changes: dict[str, Any]
) -> dict[str, Any]:
    """A finished sweep run: its resolved recipe on disk (the choice reads it) and its record."""
    out = tmp_path / algorithm / f"v{variant}"
    out.mkdir(parents=True)
    config = {**base, **changes}
    (out / "recipe.yaml").write_text(yaml.safe_dump({"compression": {"algorithm": algorithm, "config": config}}))
    return {
        "task": "sweep",
        "algorithm": algorithm,
        "cell": SWEEPS[algorithm][0],
        "variant": variant,
        "sets": [f"compression.config.{k}={v}" for k, v in changes.items()],
        "relative": {},
        "val_pgd": val_pgd,
        "val_examples": 1000,
        "status": "done",
        "out": str(out),
    }


def _choose(tmp_path: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    path = tmp_path / "sweep.json"
    choose_sweep({"records": {f"{r['algorithm']}/v{r['variant']}": r for r in records}}, path, SWEEPS)
    chosen: dict[str, Any] = json.loads(path.read_text())
    return chosen


def test_a_variant_that_switches_s2ap_off_is_an_ablation_never_the_choice(tmp_path: Path) -> None:
    base = {"epochs": 2, "gamma": 0.1, "warmup_epochs": 1}
    chosen = _choose(
        tmp_path,
        [
            _record(tmp_path, "s2ap", 0, 0.635, base, {}),
            _record(tmp_path, "s2ap", 1, 0.672, base, {"gamma": 0.01}),
            _record(tmp_path, "s2ap", 2, 0.680, base, {"warmup_epochs": 2}),  # the best, but it is HYDRA
        ],
    )["s2ap"]
    assert chosen["chosen"] == ["compression.config.gamma=0.01"]
    ablations = {v["variant"]: v.get("ablation") for v in chosen["variants"]}
    assert ablations[0] is None and ablations[1] is None
    assert "no ascent epoch" in ablations[2]


def test_the_default_stays_unless_beaten_by_more_than_one_standard_error(tmp_path: Path) -> None:
    # sd of 0.68 on 1,000 images is 0.0148: +0.004 is noise, +0.02 is not
    for name, challenger, expected in (("close", 0.684, []), ("clear", 0.700, ["compression.config.lr=0.2"])):
        folder = tmp_path / name
        records = [
            _record(folder, "hydra", 0, 0.680, {"lr": 0.1}, {}),
            _record(folder, "hydra", 1, challenger, {"lr": 0.1}, {"lr": 0.2}),
        ]
        assert _choose(folder, records)["hydra"]["chosen"] == expected, name


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
