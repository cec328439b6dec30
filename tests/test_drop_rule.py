"""The gate's drop checks decided on paired per-example outcomes: the interval and p-value against
scipy, the point and upper_bound rules, an inconclusive verdict with the examples that would decide
it, the plan (``robprune gate --plan``) and the run's summary line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, norm, ttest_rel

from robprune_deploy.cli.main import main
from robprune_deploy.cli.run_summary import summary_lines
from robprune_deploy.gate.checks import Measurements, paired_drops, run_checks
from robprune_deploy.gate.drop_rule import paired_drop
from robprune_deploy.gate.plan import ASSUMED_DISCORDANCE, examples_needed, plan
from robprune_deploy.gate.verdict import GateVerdict
from robprune_deploy.recipe import GateSection, load_recipe
from tests.clitools import RECIPES, cli, one_error


def _table(both: int, baseline_only: int, candidate_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-example outcomes (baseline, candidate) with the given 2x2 table."""
    base = np.array([True] * both + [True] * baseline_only + [False] * candidate_only + [False] * neither)
    cand = np.array([True] * both + [False] * baseline_only + [True] * candidate_only + [False] * neither)
    return base, cand


def _gate(**thresholds: object) -> GateSection:
    """A gate with only the given checks (no parity, audit or indicator rows)."""
    return GateSection(max_parity_error=None, sparsity_tolerance=None, indicators=[], **thresholds)  # type: ignore[arg-type]


def _measured(clean: np.ndarray, pgd: np.ndarray) -> Measurements:
    return Measurements(
        clean_acc=float(clean.mean()), pgd_acc=float(pgd.mean()), outcomes={"clean_acc": clean, "pgd_acc": pgd}
    )


def test_the_binary_drop_is_the_negated_newcombe_difference_with_scipys_exact_mcnemar() -> None:
    base, cand = _table(both=60, baseline_only=14, candidate_only=5, neither=71)
    pair = paired_drop(base, cand)
    assert pair is not None and pair.method == "newcombe" and pair.examples == 150
    assert pair.drop == pytest.approx(9 / 150)
    # exact McNemar: the 19 discordant examples, 5 of them the candidate's, against a fair coin
    assert pair.p_value == pytest.approx(binomtest(5, 19, 0.5).pvalue)
    assert pair.low < pair.drop < pair.high
    # Newcombe's hybrid interval is asymmetric and narrower than two independent Wald intervals
    independent = 1.96 * math.sqrt(sum(p * (1 - p) for p in (base.mean(), cand.mean())) / 150)
    assert pair.high - pair.low < 2 * independent
    assert pair.spread == pytest.approx(19 / 150 - (9 / 150) ** 2)


def test_the_cell_averaged_drop_is_scipys_paired_t() -> None:
    rng = np.random.default_rng(0)
    base = rng.random((200, 6)) < 0.7
    cand = rng.random((200, 6)) < 0.62
    pair = paired_drop(base, cand)
    assert pair is not None and pair.method == "paired-t"
    result = ttest_rel(base.mean(axis=1), cand.mean(axis=1))
    low, high = result.confidence_interval(0.95)
    assert (pair.low, pair.high) == pytest.approx((low, high))
    assert pair.p_value == pytest.approx(result.pvalue)
    assert pair.drop == pytest.approx(base.mean() - cand.mean())


def test_outcomes_on_different_examples_are_not_paired() -> None:
    assert paired_drop(np.ones(10, bool), np.ones(9, bool)) is None


def test_point_passes_upper_bound_is_inconclusive_and_says_how_many_examples_decide() -> None:
    # 150 examples, drop 2 points, 12% discordance: under 5 points, but the interval reaches above it
    base, cand = _table(both=50, baseline_only=10, candidate_only=7, neither=83)
    candidate, baseline = _measured(cand, cand), _measured(base, base)
    point = run_checks(_gate(max_pgd_drop=0.05), candidate, baseline)
    (row,) = point
    assert row.passed and row.status == "pass" and row.measured == pytest.approx(0.02)
    assert row.interval is not None and row.interval[1] > 0.05 and row.examples == 150
    assert "McNemar p=" in row.detail and "rule point" in row.detail

    (strict,) = run_checks(_gate(max_pgd_drop=0.05, drop_rule="upper_bound"), candidate, baseline)
    assert not strict.passed and strict.inconclusive and strict.status == "inconclusive"
    # z^2 * (discordance - drop^2) / (threshold - drop)^2 = 1.96^2 * (0.1133 - 0.0004) / 0.03^2
    z = norm.ppf(0.975)
    assert strict.examples_needed == math.ceil(z**2 * (17 / 150 - 0.02**2) / 0.03**2)
    assert strict.examples_needed > 150 and f"about {strict.examples_needed} examples" in strict.detail
    assert strict.to_dict()["status"] == "inconclusive" and strict.to_dict()["interval"] == list(strict.interval)
    verdict = GateVerdict(False, [*point, strict], candidate, baseline, "cpu")
    assert verdict.failures == ["max_pgd_drop"]  # names, as tags and summary.json keep them
    assert verdict.failure_lines == [
        f"max_pgd_drop (inconclusive: about {strict.examples_needed} examples would decide it)"
    ]


def test_upper_bound_passes_a_confirmed_small_drop_and_fails_a_confirmed_large_one() -> None:
    gate = _gate(max_clean_drop=0.05, max_pgd_drop=0.05, drop_rule="upper_bound")
    small_b, small_c = _table(both=1500, baseline_only=20, candidate_only=10, neither=470)  # drop 0.5 points
    large_b, large_c = _table(both=1000, baseline_only=300, candidate_only=20, neither=680)  # drop 14 points
    clean, pgd = run_checks(gate, _measured(small_c, large_c), _measured(small_b, large_b))
    assert clean.passed and clean.interval is not None and clean.interval[1] < 0.05
    assert not pgd.passed and not pgd.inconclusive and pgd.interval is not None and pgd.interval[0] > 0.05


def test_upper_bound_without_paired_outcomes_fails_and_says_why() -> None:
    gate = _gate(max_pgd_drop=0.05, drop_rule="upper_bound")
    (row,) = run_checks(gate, Measurements(clean_acc=0.9, pgd_acc=0.5), Measurements(clean_acc=0.9, pgd_acc=0.5))
    assert not row.passed and row.measured == 0 and "no per-example outcomes" in row.detail
    (point,) = run_checks(
        _gate(max_pgd_drop=0.05),
        Measurements(clean_acc=0.9, pgd_acc=0.5),
        Measurements(clean_acc=0.9, pgd_acc=0.5),
    )
    assert point.passed and point.interval is None  # the point rule still decides on the figures


def test_every_figure_measured_on_both_gets_its_paired_drop() -> None:
    base, cand = _table(both=40, baseline_only=6, candidate_only=4, neither=50)
    drops = paired_drops(_measured(cand, cand), _measured(base, base))
    assert set(drops) == {"clean_acc", "pgd_acc"} and drops["pgd_acc"].drop == pytest.approx(0.02)
    assert paired_drops(_measured(cand, cand), None) == {}


def test_the_plan_sizes_an_evaluation_from_the_assumption_or_a_pilot(tmp_path: Path) -> None:
    z = norm.ppf(0.975) + norm.ppf(0.8)
    assert examples_needed(0.05, 0.0, 0.1) == math.ceil(z**2 * 0.1 / 0.05**2)  # 314
    assert examples_needed(0.05, 0.06, 0.1) is None  # a drop above the threshold never passes
    recipe = load_recipe(RECIPES / "digits_hydra_channel.yaml")
    (row,) = plan(recipe)
    assert (row.check, row.source, row.variance) == ("max_pgd_drop", "assumed", ASSUMED_DISCORDANCE)
    assert row.examples_needed == examples_needed(0.1, 0.0, ASSUMED_DISCORDANCE)
    assert row.examples_planned == recipe.evaluate.num_examples

    threat = load_recipe(
        RECIPES / "digits_hydra_channel.yaml",
        [
            "evaluate.threats=[{norm: l2, eps: 1.0, examples: 100}]",
            "gate.threats={l2-1: {max_drop: 0.05}}",
            "evaluate.corruptions={examples: 60}",
            "gate.max_corruption_drop=0.05",
        ],
    )
    planned = {row.check: row.examples_planned for row in plan(threat)}
    assert planned == {"max_pgd_drop": 450, "threat:l2-1.max_drop": 100, "max_corruption_drop": 60}

    (piloted,) = plan(recipe, {"pgd_acc": {"drop": 0.03, "spread": 0.08}})
    assert piloted.source == "pilot" and piloted.examples_needed == math.ceil(z**2 * 0.08 / 0.07**2)


def test_gate_plan_prints_the_rows_and_refuses_what_it_cannot_use(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    recipe = RECIPES / "digits_hydra_channel.yaml"
    pilot = tmp_path / "gate.json"
    pilot.write_text(json.dumps({"paired_drops": {"pgd_acc": {"drop": 0.03, "spread": 0.08}}}), encoding="utf-8")
    assert cli(capsys, "gate", "--plan", "--recipe", recipe, "--pilot", tmp_path)[0] == 0  # the folder's gate.json
    capsys.readouterr()
    assert main(["gate", "--plan", "--recipe", str(recipe), "--pilot", str(pilot)]) == 0
    printed = capsys.readouterr().out
    z = norm.ppf(0.975) + norm.ppf(0.8)
    assert f"max_pgd_drop <= 10.0 pts: {math.ceil(z**2 * 0.08 / 0.07**2):,} examples (pilot drop +3.0 pts" in printed

    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    code, lines = cli(capsys, "gate", "--plan", "--recipe", recipe, "--pilot", tmp_path / "bad.json")
    assert code == 2 and one_error(lines, "--pilot", "paired_drops")
    code, lines = cli(capsys, "gate", "--recipe", recipe, "--report", tmp_path / "r")
    assert code == 2 and one_error(lines, "MODEL: required")
    assert not (tmp_path / "r").exists()


def test_the_run_summary_leads_with_the_paired_autoattack_drop(tmp_path: Path) -> None:
    drop = {"drop": 0.02, "low": -0.011, "high": 0.051, "p_value": 0.21, "examples": 150, "method": "newcombe"}
    summary = {"gate.passed": True, "gate.paired_drops": {"pgd_acc": {**drop, "drop": 0.01}, "autoattack_acc": drop}}
    line = next(x for x in summary_lines(summary, tmp_path) if x.startswith("drop from dense"))
    assert line == (
        "drop from dense, paired, 95% interval: AutoAttack +2.0 pts [-1.1, +5.1] (n=150, McNemar p=0.21); "
        "PGD +1.0 pts [-1.1, +5.1] (n=150, McNemar p=0.21)"
    )
