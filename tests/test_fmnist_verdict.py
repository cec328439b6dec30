"""The powered Fashion-MNIST verdict (benchmarks/fmnist_verdict*.py, fmnist_claims.py): its sweep files,
the radius choice read from a validation sweep, the records collected from sweep folders, and the
claims (paired interval, McNemar, detectable effect, verdict) computed from records with known figures.

No model is trained: the sweep folders are written here as ``robprune sweep`` and ``robprune run``
write them (sweep.json, summary.json, outcomes.json, statistics.json, the final mask files), with
figures chosen so that every number the claims report is known.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fmnist_verdict as verdict_script
from fmnist_claims import ARMS, METRICS, measure_claims, power_plan, settings_of
from fmnist_verdict_records import grouped, keep_mask, mask_distances, sweep_records
from fmnist_verdict_tables import plan_tables, radius_tables, verdict_tables
from robprune_s2ap.stability import save_masks

from robprune_deploy.recipe import load_recipe
from robprune_deploy.statistics import detectable_paired_difference, pack_outcomes
from robprune_deploy.sweep.spec import load_sweep
from robprune_deploy.sweep.worker import check_recipes

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "recipes" / "sweeps" / "fmnist_verdict"
EXAMPLES, AA_EXAMPLES = 400, 100


# --- the sweep files -------------------------------------------------------------------------------


def test_the_verdicts_sweep_files_validate_and_plan_the_claims() -> None:
    files = sorted(SWEEPS.glob("*.yaml"))
    assert {f.stem for f in files} == {verdict_script.VALIDATION, *verdict_script.TEST_SWEEPS}
    seeds: dict[str, set[int]] = {}
    for path in files:
        spec = load_sweep(path)
        recipe = check_recipes(spec, str(path))  # every grid point validates against its recipe
        assert spec.objective.metric.startswith("val.")  # a sweep orders by validation, never by test
        assert spec.grid is not None and spec.out.parent == REPO / "runs" / "fmnist_verdict"
        seeds[path.stem] = set(spec.grid["seed"])
        assert str(recipe.model.checkpoint).startswith("benchmarks/start_models/")  # one start model per network
        assert recipe.data.val_size == 2000  # the start models' held-out images, never trained on
        if path.stem == verdict_script.VALIDATION:
            assert recipe.data.eval_split == "val" and len(seeds[path.stem]) >= 2
            assert verdict_script.RADIUS in spec.grid
        else:
            assert recipe.data.eval_split == "test" and recipe.evaluate.num_examples >= 10_000
            assert recipe.evaluate.attacks == "autoattack-fast" and recipe.evaluate.ensemble_examples >= 2000
            assert recipe.gate.baseline == "none"
            assert (verdict_script.RADIUS in spec.fixed) == (path.stem in verdict_script.RADIUS_SWEEPS)
    # the radius is chosen on seeds the test never uses
    assert not seeds[verdict_script.VALIDATION] & set().union(*(seeds[s] for s in verdict_script.TEST_SWEEPS))
    planned = {(arm.method, setting): n for arm, setting, n in verdict_script.planned_claims()}
    assert planned == {
        ("s2ap", "u95"): 5,
        ("s2ap", "u99"): 5,
        ("s2ap_awp", "u99"): 5,  # the budget cut the AWP arm to 99%
        ("mrpf", "75"): 4,
        ("mrpf", "90"): 4,
    }
    assert verdict_script.examples_per_metric() == {"pgd20": 10_000, "autoattack": 2000}
    s2ap, hydra = (load_recipe(SWEEPS.parent.parent / "fmnist_verdict" / f"{n}.yaml") for n in ("s2ap", "hydra"))
    assert s2ap.compression.config["epochs"] >= 10 and s2ap.compression.config["warmup_epochs"] >= 2
    assert {k: v for k, v in s2ap.compression.config.items() if k not in ("swap_fraction", "warmup_epochs")} == dict(
        hydra.compression.config
    )  # S2AP is HYDRA's search plus the ascent, nothing else


# --- the radius choice ------------------------------------------------------------------------------


def _layout(tmp_path: Path, scores: dict[float, dict[int, float]], complete: bool = True) -> verdict_script.Layout:
    """Copies of the validation sweep file (its output folder holding a sweep.json with ``scores``)
    and of the S2AP test sweeps, and a results folder."""
    sweeps, out = tmp_path / "sweeps", tmp_path / "radius"
    out.mkdir(parents=True)
    sweeps.mkdir()
    text = (SWEEPS / f"{verdict_script.VALIDATION}.yaml").read_text()
    text = text.replace(
        "recipe: ../../fmnist_verdict/s2ap.yaml", f"recipe: {REPO / 'recipes/fmnist_verdict/s2ap.yaml'}"
    )
    text = text.replace("out: ../../../runs/fmnist_verdict/s2ap_radius", f"out: {out}")
    (sweeps / f"{verdict_script.VALIDATION}.yaml").write_text(text)
    for name in verdict_script.RADIUS_SWEEPS:
        shutil.copy(SWEEPS / f"{name}.yaml", sweeps / f"{name}.yaml")
    trials = [
        {"number": i, "state": "COMPLETE", "params": {verdict_script.RADIUS: radius, "seed": seed}, "value": value}
        for i, (radius, seed, value) in enumerate(
            (r, s, v) for r, by_seed in scores.items() for s, v in by_seed.items()
        )
    ]
    (out / "sweep.json").write_text(json.dumps({"complete": complete, "failed": [], "trials": trials}))
    return verdict_script.Layout(sweeps, tmp_path / "results")


def test_the_radius_is_chosen_by_the_paired_standard_error_and_written_into_the_test_sweeps(
    tmp_path: Path,
) -> None:
    # 0.01 beats the default 0.02 by 0.020 and 0.024 on the two seeds: mean 0.022, SE 0.002; 0.05
    # gains more on average (0.025) but with an SE of 0.035 it is noise.
    scores = {0.01: {101: 0.640, 102: 0.654}, 0.02: {101: 0.620, 102: 0.630}, 0.05: {101: 0.680, 102: 0.620}}
    layout = _layout(tmp_path, scores)
    before = {name: layout.sweep_file(name).read_text() for name in verdict_script.RADIUS_SWEEPS}
    assert verdict_script.choose(layout) == 0.01
    for name in verdict_script.RADIUS_SWEEPS:
        after = layout.sweep_file(name).read_text()
        assert f"{verdict_script.RADIUS}: 0.01   # chosen on validation" in after
        assert after.replace("swap_fraction: 0.01 ", "swap_fraction: 0.02 ") == before[name]  # only the value
        assert layout.spec(name).fixed[verdict_script.RADIUS] == 0.01
    record = json.loads((layout.results / "radius_choice.json").read_text())
    assert record["default"] == 0.02 and record["chosen"] == 0.01
    assert record["gains"]["0.01"]["mean"] == pytest.approx(0.022)
    assert record["gains"]["0.01"]["se"] == pytest.approx(0.002)
    assert record["gains"]["0.05"]["se"] == pytest.approx(0.035)
    rows = radius_tables(record)["radius"]["rows"]
    assert [row[0] for row in rows] == [0.01, 0.02, 0.05] and rows[0][-1] == "**chosen**"
    assert rows[0][3] == "+2.2 ± 0.2" and rows[1][-1] == "the recipe's default"
    # a second run of the command changes nothing
    written = layout.sweep_file("s2ap").read_text()
    assert verdict_script.choose(layout) == 0.01 and layout.sweep_file("s2ap").read_text() == written


def test_the_choice_waits_for_a_complete_validation_sweep(tmp_path: Path) -> None:
    layout = _layout(tmp_path, {0.02: {101: 0.6}}, complete=False)
    with pytest.raises(SystemExit, match="the validation sweep is not complete"):
        verdict_script.choose(layout)
    assert not layout.results.exists()


# --- records from sweep folders -------------------------------------------------------------------


def _outcomes(rng: np.random.Generator, accuracy: float, n: int) -> np.ndarray:
    return rng.random(n) < accuracy


def _write_trial(
    folder: Path, algorithm: str, ratio: float, figures: dict[str, Any], mask: torch.Tensor | None
) -> None:
    folder.mkdir(parents=True)
    pgd, aa = figures["pgd"], figures["autoattack"]
    summary = {
        "algorithm": algorithm,
        "granularity": "unstructured" if mask is not None else "channel",
        "target_ratio": ratio,
        "sparsity": ratio,
        "macs_pruned": 1.0,
        "macs_dense": 4.0,
        "onnx.clean_acc": 0.8,
        "onnx.pgd_acc": float(pgd.mean()),
        "onnx.autoattack_acc": float(aa.mean()),
        "onnx.examples": len(pgd),
        "onnx.autoattack_examples": len(aa),
        "splits.onnx": "test",
        "val.pgd_acc": 0.6,
        "gate.passed": True,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    outcomes = {
        "subset_sha256": figures.get("sha", "same-examples"),
        "split": "test",
        "outcomes": {
            name: {"examples": len(values), "bits": pack_outcomes(values)}
            for name, values in (("pgd", pgd), ("autoattack", aa))
        },
    }
    (folder / "outcomes.json").write_text(json.dumps(outcomes))
    if mask is not None:
        epochs = [{"hessian_top_eigenvalue": 9.0}, {"hessian_top_eigenvalue": figures["hessian"], "sharpness": 0.1}]
        (folder / "statistics.json").write_text(json.dumps({"extra": {"epochs": epochs, "final_mask_sha256": "x"}}))
        save_masks({"conv.weight": mask}, folder / "plots" / f"{algorithm}_final_mask.npz")


def _sweep(root: Path, name: str, trials: list[tuple[float, int, dict[str, Any], torch.Tensor | None]]) -> Path:
    """A sweep output folder with one completed trial per entry and one that failed."""
    out = root / name
    algorithm = name.removesuffix("_awp")
    listed = []
    for number, (ratio, seed, figures, mask) in enumerate(trials):
        folder = f"trials/{number:03d}_ratio={ratio}_seed={seed}"
        _write_trial(out / folder, algorithm, ratio, figures, mask)
        listed.append({"number": number, "state": "COMPLETE", "params": {"compression.ratio": ratio, "seed": seed}})
        listed[-1].update(run_folder=folder, value=0.6, seconds=10.0)
    listed.append({"number": 99, "state": "FAIL", "params": {"compression.ratio": 0.5, "seed": 9}, "run_folder": None})
    (out / "sweep.json").write_text(json.dumps({"complete": True, "trials": listed}))
    return out


def _mask(kept: list[int], size: int = 20) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[kept] = True
    return mask


# S2AP - HYDRA at 99% on 5 seeds: AutoAttack differences of +2.0, 0.0, +4.0, +1.0, +3.0 points (on 200
# examples: +4, 0, +8, +2, +6 examples); PGD-20 +2.0, +1.0, +3.0, +1.5, +2.5 (on 400: +8, +4, +12, +6, +10).
# MRPF - l1_filter at 75% on 3 seeds: AutoAttack +1, -1, 0 examples of 100; PGD-20 +2, 0, -2 of 400.
AA_GAINS = (4, 0, 8, 2, 6)
PGD_GAINS = (8, 4, 12, 6, 10)
MRPF_GAINS = ((1, 2), (-1, 0), (0, -2))


def _shifted(base: np.ndarray, gain: int) -> np.ndarray:
    """``base`` with ``gain`` more correct examples (fewer when negative)."""
    shifted = base.copy()
    shifted[np.flatnonzero(~base if gain > 0 else base)[: abs(gain)]] = gain > 0
    return shifted


def _verdict_folders(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    s2ap, hydra = [], []
    for seed, gain, pgd_gain in zip(range(1, 6), AA_GAINS, PGD_GAINS, strict=True):
        base_pgd, base_aa = _outcomes(rng, 0.6, EXAMPLES), _outcomes(rng, 0.5, 2 * AA_EXAMPLES)
        better_pgd, better_aa = _shifted(base_pgd, pgd_gain), _shifted(base_aa, gain)
        # masks of 4 kept entries: every two S2AP seeds share 3 of them, every two HYDRA seeds 2
        s2ap.append(
            (
                0.99,
                seed,
                {"pgd": better_pgd, "autoattack": better_aa, "hessian": 2.0 + seed},
                _mask([0, 1, 2, 3 + seed]),
            )
        )
        hydra.append(
            (
                0.99,
                seed,
                {"pgd": base_pgd, "autoattack": base_aa, "hessian": 4.0},
                _mask([0, 1, 2 * seed + 2, 2 * seed + 3]),
            )
        )
    # one seed of S2AP measured on other examples: paired over seeds, left out of the pooled McNemar
    s2ap[4][2]["sha"] = "other-examples"
    mrpf, l1_filter = [], []
    for seed, (aa_gain, pgd_gain) in zip((1, 2, 3), MRPF_GAINS, strict=True):
        base = {"pgd": _outcomes(rng, 0.5, EXAMPLES), "autoattack": _outcomes(rng, 0.4, AA_EXAMPLES)}
        l1_filter.append((0.75, seed, base, None))
        shifted = {"pgd": _shifted(base["pgd"], pgd_gain), "autoattack": _shifted(base["autoattack"], aa_gain)}
        mrpf.append((0.75, seed, shifted, None))
    return {
        "s2ap": _sweep(root, "s2ap", s2ap),
        "hydra": _sweep(root, "hydra", hydra),
        "s2ap_awp": _sweep(root, "s2ap_awp", s2ap[:1]),
        "mrpf": _sweep(root, "mrpf", mrpf),
        "l1_filter": _sweep(root, "l1_filter", l1_filter),
    }


def _records(root: Path) -> list[dict[str, Any]]:
    records = []
    for name, out in _verdict_folders(root).items():
        found, missing, elsewhere = sweep_records(name, out)
        (line,) = missing.values()
        assert "trial 99" in line and "FAIL" in line and not elsewhere
        records += found
    return records


def test_a_failed_attempt_that_a_retry_completed_is_not_missing(tmp_path: Path) -> None:
    """A worker stopped mid-trial leaves a FAIL; the retry at the same setting and seed completes it."""
    rng = np.random.default_rng(2)
    figures = {"pgd": _outcomes(rng, 0.5, EXAMPLES), "autoattack": _outcomes(rng, 0.4, AA_EXAMPLES), "hessian": 1.0}
    out = _sweep(tmp_path, "hydra", [(0.99, 4, figures, _mask([0, 1]))])
    document = json.loads((out / "sweep.json").read_text())
    document["trials"][0]["number"] = 2  # the retry; the stopped attempt was trial 1
    stopped = {"number": 1, "state": "FAIL", "params": {"compression.ratio": 0.99, "seed": 4}, "run_folder": None}
    document["trials"].append(stopped)
    (out / "sweep.json").write_text(json.dumps(document))
    found, missing, _ = sweep_records("hydra", out)
    assert [(r["seed"], r["trial"]) for r in found] == [(4, 2)]
    assert list(missing.values()) == ["hydra trial 99 (compression.ratio=0.5, seed=9): FAIL"]  # only the other place


def test_records_are_collected_per_cell_and_seed_with_their_outcomes_and_mechanism(tmp_path: Path) -> None:
    records = _records(tmp_path)
    cells = grouped(records)
    assert sorted(cells) == ["hydra_u99", "l1_filter_75", "mrpf_75", "s2ap_awp_u99", "s2ap_u99"]
    assert [r["seed"] for r in cells["s2ap_u99"]] == [1, 2, 3, 4, 5]
    first = cells["s2ap_u99"][0]
    assert first["sweep"] == "s2ap" and first["setting"] == "u99" and first["macs_reduction"] == 0.75
    assert first["hessian"] == 3.0  # the last search epoch's
    assert first["outcomes"]["pgd"]["examples"] == EXAMPLES and first["outcomes"]["autoattack"]["examples"] == 200
    assert first["run_folder"] == "s2ap/trials/000_ratio=0.99_seed=1"
    results = tmp_path / "results"
    for record in records:
        keep_mask(record, results)
    assert first["mask"] == "masks/s2ap/u99_seed1.npz" and "mask_file" not in first
    # S2AP's masks share 3 of 4 kept entries (2 entries differ: distance 2 / 4), HYDRA's 2 of 4 (4 / 4)
    s2ap = mask_distances(cells["s2ap_u99"], results)
    assert s2ap is not None and s2ap["mean"] == pytest.approx(0.5) and len(s2ap["pairs"]) == 10
    hydra = mask_distances(cells["hydra_u99"], results)
    assert (
        hydra is not None
        and hydra["pairs"]["1-2"] == pytest.approx(1.0)
        and hydra["pairs"]["1-3"] == pytest.approx(1.0)
    )
    assert mask_distances(cells["mrpf_75"], results) is None  # channel pruning: no mask file
    assert settings_of(cells, "s2ap") == ["u99"] and settings_of(cells, "s2ap_awp") == ["u99"]


def test_the_claims_are_the_paired_interval_mcnemar_and_verdict_of_the_known_figures(tmp_path: Path) -> None:
    cells = grouped(_records(tmp_path))
    claims = {(c.arm.method, c.setting, c.metric.key): c for c in measure_claims(cells, ARMS, METRICS)}
    # the AWP arm has one seed of S2AP and no HYDRA: no claim
    assert set(claims) == {(m, s, k) for m, s in (("s2ap", "u99"), ("mrpf", "75")) for k in ("autoattack", "pgd20")}
    aa = claims["s2ap", "u99", "autoattack"]
    differences = [g / 200 for g in AA_GAINS]
    assert aa.seeds == (1, 2, 3, 4, 5) and aa.paired is not None
    assert aa.paired.mean == pytest.approx(0.02) and list(aa.paired.differences) == pytest.approx(differences)
    interval = stats.ttest_1samp(differences, 0).confidence_interval(0.95)
    assert (aa.paired.low, aa.paired.high) == pytest.approx((interval.low, interval.high))
    assert aa.detectable == pytest.approx(detectable_paired_difference(5, float(np.std(differences, ddof=1))))
    # the interval, +0.04 .. +3.96 points, holds 0 and the claimed +1 with a half-width of 1.96 > 1
    assert aa.verdict.word == "inconclusive" and "half-width" in aa.verdict.reason
    # pooled over the 4 seeds measured on the same examples: S2AP alone right on 4+0+8+2 = 14, HYDRA on none
    assert aa.pooled is not None and aa.pooled.n == 4 * 200
    assert (aa.pooled.candidate_only, aa.pooled.baseline_only) == (14, 0)
    assert aa.pooled.p_value == pytest.approx(stats.binomtest(0, 14, 0.5).pvalue)
    pgd = claims["s2ap", "u99", "pgd20"]
    assert pgd.paired is not None and pgd.paired.mean == pytest.approx(0.02)
    # +1.02 .. +2.98 points: excludes 0, reaches +1, half-width 0.98 < 1
    assert (pgd.paired.low, pgd.paired.high) == pytest.approx((0.010184, 0.029816), abs=1e-6)
    assert pgd.verdict.word == "holds"
    # MRPF - l1_filter: 0 +- 2.5 points on AutoAttack, 0 +- 1.2 on PGD-20: both end short of the claimed +3.2
    mrpf = claims["mrpf", "75", "autoattack"]
    assert mrpf.paired is not None and mrpf.paired.mean == pytest.approx(0.0) and mrpf.paired.sd == pytest.approx(0.01)
    assert mrpf.verdict.word == "does not hold" and claims["mrpf", "75", "pgd20"].verdict.word == "does not hold"
    assert mrpf.pooled is not None and (mrpf.pooled.candidate_only, mrpf.pooled.baseline_only) == (1, 1)
    table = verdict_tables({"records": _records(tmp_path / "again")})
    row = next(r for r in table["claims"]["rows"] if r[1] == "AutoAttack-fast")
    assert row[:5] == ["S2AP − HYDRA u99", "AutoAttack-fast", "+1.0", 5, "+2.0 [+0.0, +4.0]"]
    assert row[6] == f"{aa.pooled.p_value:.3g} (800)" and row[8].startswith("**inconclusive**")
    cell = next(r for r in table["cells"]["rows"] if r[0] == "s2ap_u99")
    assert cell[1] == 5 and cell[-2] == "5.000 ± 1.581 (5)" and cell[-1] == "n/a"  # no distances stored


def test_the_power_plan_uses_the_pilots_sd_at_the_same_setting_or_the_widest(tmp_path: Path) -> None:
    def cell(name: str, seed: int, aa: float) -> dict[str, Any]:
        return {"cell": name, "seed": seed, "autoattack": aa, "pgd20": aa + 0.01}

    pilot = grouped(
        [
            *(cell("s2ap_u95", s, v) for s, v in enumerate((0.66, 0.65, 0.67))),
            *(cell("hydra_u95", s, v) for s, v in enumerate((0.65, 0.64, 0.65))),  # differences 1, 1, 2 points
            *(cell("mrpf_50", s, v) for s, v in enumerate((0.60, 0.62, 0.61))),
            *(cell("l1_filter_50", s, v) for s, v in enumerate((0.60, 0.60, 0.60))),  # 0, 2, 1 points
        ]
    )
    arms = {arm.method: arm for arm in ARMS}
    planned = [(arms["s2ap"], "u95", 5), (arms["s2ap"], "u99", 5), (arms["mrpf"], "90", 3)]
    rows = {
        (r.arm.method, r.setting, r.metric.key): r
        for r in power_plan(pilot, planned, {"pgd20": 10_000, "autoattack": 2000})
    }
    u95 = rows["s2ap", "u95", "autoattack"]
    sd = float(np.std([0.01, 0.01, 0.02], ddof=1))
    assert u95.pilot_sd == pytest.approx(sd) and u95.pilot_setting == "u95"
    assert u95.detectable_seeds == pytest.approx(detectable_paired_difference(5, sd))
    assert u95.seeds_for_claim == next(n for n in range(2, 101) if detectable_paired_difference(n, sd) <= 0.01)
    assert u95.examples == 5 * 2000 and rows["s2ap", "u95", "pgd20"].examples == 5 * 10_000
    assert rows["s2ap", "u99", "autoattack"].pilot_setting == "u95"  # no 99% in the pilot: its widest sd
    mrpf = rows["mrpf", "90", "autoattack"]
    assert mrpf.pilot_setting == "50" and mrpf.pilot_sd == pytest.approx(0.01)
    assert mrpf.discordance == pytest.approx(0.61 * 0.4 + 0.6 * 0.39)  # the independent-error bound
    assert math.isfinite(mrpf.detectable_examples or math.nan)
    document = {
        "power": [
            {
                "claim": r.arm.label,
                "setting": r.setting,
                "metric": r.metric.label,
                "claimed": r.arm.claimed,
                **{k: getattr(r, k) for k in ("seeds", "examples", "pilot_sd", "pilot_setting", "discordance")},
                **{k: getattr(r, k) for k in ("detectable_seeds", "seeds_for_claim", "detectable_examples")},
            }
            for r in rows.values()
        ]
    }
    first = plan_tables(document)["power"]["rows"][0]
    assert first[:5] == ["S2AP − HYDRA u95", "AutoAttack-fast", "+1.0", 5, f"{100 * sd:.1f} (u95)"]


# --- the start models -------------------------------------------------------------------------------


def _start_layout(tmp_path: Path, checkpoint: Path) -> verdict_script.Layout:
    """Copies of every verdict sweep file whose trials start from ``checkpoint``."""
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    for path in SWEEPS.glob("*.yaml"):
        text = path.read_text().replace("recipe: ../../fmnist_verdict/", f"recipe: {REPO / 'recipes/fmnist_verdict'}/")
        entry = f"  model.checkpoint: {checkpoint}\n"
        if "\nfixed:\n" in text:
            text = text.replace("\nfixed:\n", f"\nfixed:\n{entry}", 1)
        else:
            text = text.replace("\ngrid:\n", f"\nfixed:\n{entry}grid:\n", 1)
        (sweeps / path.name).write_text(text)
    return verdict_script.Layout(sweeps, tmp_path / "results")


def test_the_verdict_starts_only_from_an_existing_start_model_with_its_recorded_digest(tmp_path: Path) -> None:
    checkpoint = tmp_path / "fmnist_cnn.pt"
    layout = _start_layout(tmp_path, checkpoint)
    with pytest.raises(SystemExit, match=r"does not exist; train and ship it first: python benchmarks/start_models"):
        verdict_script.start_models(layout)
    checkpoint.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    found = verdict_script.start_models(layout)  # no record beside it (a stand-in): its digest, unrecorded
    assert set(found) == {"fmnist_cnn", "resnet20"}
    assert found["fmnist_cnn"] == {"checkpoint": str(checkpoint), "sha256": digest, "recorded": False}
    (tmp_path / "fmnist_cnn.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(SystemExit, match=f"SHA-256 {digest} is not the {'0' * 64} recorded"):
        verdict_script.start_models(layout)
    (tmp_path / "fmnist_cnn.json").write_text(json.dumps({"sha256": digest}))
    assert verdict_script.start_models(layout)["fmnist_cnn"]["recorded"] is True
    checkpoint.unlink()  # a report while the start model trains records it as missing
    assert verdict_script.start_models(layout, shipped=False)["fmnist_cnn"]["sha256"] is None


def test_equal_differences_over_the_seeds_are_no_interval_and_no_verdict() -> None:
    # every seed of both methods at chance (the smoke's stand-ins): a difference of 0 with sd 0 is not
    # a claim "ruled out", it is nothing measured
    def cell(name: str, seed: int) -> dict[str, Any]:
        return {"cell": name, "seed": seed, "autoattack": 0.1, "pgd20": 0.11}

    cells = grouped([cell(name, seed) for name in ("s2ap_u95", "hydra_u95") for seed in (1, 2, 3)])
    claims = measure_claims(cells, ARMS, METRICS)
    assert [(c.setting, c.metric.key) for c in claims] == [("u95", "autoattack"), ("u95", "pgd20")]
    for claim in claims:
        assert claim.paired is not None and claim.paired.sd == 0 and claim.detectable is None
        assert claim.verdict.word == "inconclusive" and "all equal" in claim.verdict.reason


# --- continuing on another machine ------------------------------------------------------------------


def _machine_layout(tmp_path: Path, machine: str, checkpoint: Path) -> verdict_script.Layout:
    """The verdict's sweep files as one machine sees them: its run folders under ``tmp_path/machine``,
    the results folder (the committed one) shared by every machine."""
    sweeps = tmp_path / machine / "sweeps"
    sweeps.mkdir(parents=True)
    for path in SWEEPS.glob("*.yaml"):
        spec = load_sweep(path)
        document = {
            "recipe": str(spec.recipe),
            "out": str(tmp_path / machine / path.stem),
            "study": spec.study,
            "fixed": {**spec.fixed, "model.checkpoint": str(checkpoint)},
            "grid": spec.grid,
            "objective": spec.objective.model_dump(),
        }
        (sweeps / path.name).write_text(json.dumps(document))
    return verdict_script.Layout(sweeps, tmp_path / "results")


def test_a_report_on_another_machine_keeps_the_committed_records_of_trials_run_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "start.pt"
    checkpoint.write_bytes(b"weights")
    first = _machine_layout(tmp_path, "a", checkpoint)
    _verdict_folders(tmp_path / "a")
    verdict_script.report(first)
    committed = json.loads((tmp_path / "results" / "results.json").read_text())
    assert len(committed["records"]) == 5 + 5 + 1 + 3 + 3
    assert committed["mask_distances"]["s2ap_u99"]["mean"] == pytest.approx(0.5)
    assert (tmp_path / "results" / "masks" / "hydra" / "u99_seed5.npz").is_file()
    # Machine b has the committed results and studies (whose sweep.json lists the trials done on a)
    # but not a's run folders; it has run one HYDRA trial of its own, a new seed.
    second = _machine_layout(tmp_path, "b", checkpoint)
    for name in ("s2ap", "hydra"):
        (tmp_path / "b" / name).mkdir()
        shutil.copy(tmp_path / "a" / name / "sweep.json", tmp_path / "b" / name / "sweep.json")
    shutil.rmtree(tmp_path / "a")
    listed = json.loads((tmp_path / "b" / "hydra" / "sweep.json").read_text())
    rng = np.random.default_rng(1)
    figures = {"pgd": _outcomes(rng, 0.6, EXAMPLES), "autoattack": _outcomes(rng, 0.5, 2 * AA_EXAMPLES), "hessian": 1.0}
    _write_trial(tmp_path / "b" / "hydra" / "trials" / "new", "hydra", 0.99, figures, _mask([0, 1, 2, 3]))
    listed["trials"].append(
        {"number": 7, "state": "COMPLETE", "params": {"compression.ratio": 0.99, "seed": 6}, "run_folder": "trials/new"}
    )
    (tmp_path / "b" / "hydra" / "sweep.json").write_text(json.dumps(listed))
    capsys.readouterr()
    verdict_script.report(second)
    assert "17 records carried from the committed" in capsys.readouterr().out
    again = json.loads((tmp_path / "results" / "results.json").read_text())
    place = {(r["sweep"], r["seed"]): r for r in again["records"]}
    assert len(place) == 18 and place["hydra", 6]["run_folder"] == "hydra/trials/new"
    for key, record in place.items():
        if key != ("hydra", 6):
            assert record == next(r for r in committed["records"] if (r["sweep"], r["seed"]) == key)
    assert again["mask_distances"]["s2ap_u99"] == committed["mask_distances"]["s2ap_u99"]
    assert len(again["mask_distances"]["hydra_u99"]["pairs"]) == 15  # six seeds now
    assert not any("run folder" in line for line in again["missing"])
    # a trial done elsewhere whose record was never committed is missing, and says why
    (tmp_path / "results" / "results.json").write_text(
        json.dumps({**again, "records": [r for r in again["records"] if (r["sweep"], r["seed"]) != ("s2ap", 3)]})
    )
    verdict_script.report(second)
    missing = json.loads((tmp_path / "results" / "results.json").read_text())["missing"]
    assert [line for line in missing if "seed=3" in line and line.startswith("s2ap trial")] == [
        "s2ap trial 2 (compression.ratio=0.99, seed=3): "
        "its run folder is not here, nor its record in the committed results"
    ]
