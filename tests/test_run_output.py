"""What `robprune run` says while and after it works, without a terminal (a CI log), and what it
leaves in the registry and the reports.

One small tracked run in a child process whose stderr is a pipe, as in CI: a line per stage and
per epoch on stderr, a short summary on stdout (the JSON only with ``--json``), one line per alias
decision, and reports that name the registry, never a temporary download.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LIGHT_EVAL, overrides, subprocess_env  # type: ignore[import-not-found]

from robprune_deploy.gate.gating import GATE_JSON, GATE_MD, baseline_path, evaluate_gate, write_gate_report
from robprune_deploy.pipeline import RunContext
from robprune_deploy.progress import LINE_PREFIX
from robprune_deploy.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "digits_hydra.yaml"
TINY = [
    "pretrain.epochs=2",
    "compression.config.epochs=1",
    "finetune.epochs=1",
    "data.train_subset=128",
    "evaluate.num_examples=40",
    "evaluate.square_queries=5",
    "evaluate.square_examples=10",
    "evaluate.latency.repeats=2",
    "evaluate.latency.warmup=0",
    *LIGHT_EVAL,
    "tracking.registered_model=digits-output",
]
STAGES = ("pretrain", "prune", "finetune", "export", "evaluate", "gate")
EPOCHS = {"pretrain": 2, "prune": 1, "finetune": 1}
DEMO_RECIPES = sorted([*ROOT.glob("recipes/digits_*.yaml"), *ROOT.glob("recipes/transformers/digits_*.yaml")])


def robprune(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command in a child process; stdout and stderr are pipes, not a terminal."""
    command = [sys.executable, "-m", "robprune_deploy.cli.main", *map(str, args)]
    return subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("run_output")
    out, uri = root / "out", f"sqlite:///{root / 'mlflow.db'}"
    done = robprune("run", RECIPE, "--out", out, "--tracking-uri", uri, *overrides(*TINY), cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    return {"root": root, "out": out, "uri": uri, "done": done, "summary": summary}


def _progress(stderr: str) -> list[str]:
    return [line.removeprefix(LINE_PREFIX) for line in stderr.splitlines() if line.startswith(LINE_PREFIX)]


def test_without_a_terminal_every_stage_and_epoch_is_one_line_on_stderr(tracked_run) -> None:
    lines = _progress(tracked_run["done"].stderr)
    for stage in STAGES:
        start = lines.index(f"{stage}: started")
        end = next(i for i, line in enumerate(lines) if line.startswith(f"{stage}: done in "))
        assert start < end, lines
        assert re.fullmatch(rf"{stage}: done in \d+\.\d s.*", lines[end]), lines[end]
        epochs = [line for line in lines[start:end] if line.startswith(f"{stage}: epoch ")]
        assert len(epochs) == EPOCHS.get(stage, 0), lines
        for number, line in enumerate(epochs, 1):
            # the epoch's key figures and its time
            assert line.startswith(f"{stage}: epoch {number}/{EPOCHS[stage]}: "), line
            assert re.search(r"\(\d+\.\d s, \d+\.\d s in the stage\)$", line), line
    assert "loss " in lines[lines.index("pretrain: started") + 1]
    assert "train_adv_acc " in lines[lines.index("pretrain: started") + 1]
    summary = tracked_run["summary"]
    # the per-stage summary line carries the stage's figures, as summary.json has them
    pretrain_done = next(line for line in lines if line.startswith("pretrain: done in"))
    assert "(2 epochs)" in pretrain_done and f"torch.dense_clean_acc {summary['torch.dense_clean_acc']:.3f}" in (
        pretrain_done
    )
    evaluate_done = next(line for line in lines if line.startswith("evaluate: done in"))
    assert f"onnx.clean_acc {summary['onnx.clean_acc']:.3f}" in evaluate_done
    gate_done = next(line for line in lines if line.startswith("gate: done in"))
    assert ("verdict PASSED" if summary["gate.passed"] else "verdict FAILED") in gate_done
    # the verdict stays the last line of stderr, as `robprune gate` ends
    assert tracked_run["done"].stderr.splitlines()[-1].startswith("gate PASSED" if summary["gate.passed"] else "gate F")


def test_the_run_ends_with_a_short_summary_not_the_json(tracked_run) -> None:
    stdout, out, summary = tracked_run["done"].stdout, tracked_run["out"], tracked_run["summary"]
    lines = stdout.strip().splitlines()
    assert 4 <= len(lines) <= 8, stdout
    assert not stdout.lstrip().startswith("{")
    assert lines[0].startswith("hydra (unstructured), target ratio 0.9: params ")
    assert f"clean {summary['onnx.clean_acc']:.3f}" in lines[1] and f"PGD {summary['onnx.pgd_acc']:.3f}" in lines[1]
    verdict = "PASSED" if summary["gate.passed"] else "FAILED"
    assert f"gate: {verdict}" in stdout
    # the paired drops from the dense model, measured on the same examples, each with its interval
    drops = next(line for line in lines if line.startswith("drop from dense, paired, 95% interval: "))
    pgd = summary["gate.paired_drops"]["pgd_acc"]
    assert pgd["examples"] == summary["onnx.examples"] and pgd["low"] <= pgd["drop"] <= pgd["high"]
    shown = f"PGD {100 * pgd['drop']:+.1f} pts [{100 * pgd['low']:+.1f}, {100 * pgd['high']:+.1f}] (n={pgd['examples']}"
    assert shown in drops
    if "autoattack_acc" in summary["gate.paired_drops"]:
        assert drops.removeprefix("drop from dense, paired, 95% interval: ").startswith("AutoAttack ")
    assert f"files: {out / 'model.onnx'}, {out / 'dense.onnx'}, {out / 'report.md'}, {out / 'summary.json'}" in lines
    version = summary["mlflow.registered_version"]
    assert lines[-1] == f"mlflow: run {summary['mlflow.run_id']}, registered version {version} of digits-output"


def test_quiet_silences_the_progress_lines_and_json_prints_the_summary(tracked_run, tmp_path: Path) -> None:
    out = shutil.copytree(tracked_run["out"], tmp_path / "out")  # resumed: the trained stages are reused
    args = ("run", RECIPE, "--out", out, "--resume", "--quiet", "--json")
    done = robprune(*args, *overrides(*TINY, "tracking.enabled=false"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _progress(done.stderr) == []
    printed = json.loads(done.stdout)
    assert printed == json.loads((out / "summary.json").read_text())
    assert printed["algorithm"] == "hydra" and "gate.passed" in printed


def test_the_alias_decision_is_one_line_and_in_the_reports(tracked_run) -> None:
    summary, out = tracked_run["summary"], tracked_run["out"]
    version = summary["mlflow.registered_version"]
    lines = [line for line in tracked_run["done"].stderr.splitlines() if line.startswith("alias ")]
    if summary["gate.passed"]:
        expected = f"alias 'demo' of 'digits-output': set on version {version} (the gate passed)"
    else:
        expected = f"alias 'demo' of 'digits-output': not set (version {version} failed the gate)"
    assert lines == [expected]
    gate = json.loads((out / GATE_JSON).read_text())
    assert gate["registered_version"] == version and gate["registered_model"] == "digits-output"
    assert [entry["alias"] for entry in gate["alias"]] == ["demo"]
    report = (out / "report.md").read_text()
    assert f"Registered as version {version} of `digits-output`." in report
    assert "- alias `demo`: " in report


def test_report_md_has_the_gate_section_filled(tracked_run) -> None:
    out = tracked_run["out"]
    gate = json.loads((out / GATE_JSON).read_text())
    report = (out / "report.md").read_text()
    section = report.split("## Gate: ", 1)[1].split("\n## ", 1)[0]
    assert section.startswith("PASSED" if gate["passed"] else "FAILED")
    assert f"against baseline `{gate['baseline_model']}`" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    assert len(rows) == len(gate["checks"]) >= 3
    for check, row in zip(gate["checks"], rows, strict=True):
        assert row.startswith(f"| {check['name']} | ")
        measured = "not measured" if check["measured"] is None else f"{check['measured']:.4g}"
        assert f"| {measured} | {check['op']} " in row, (row, check)
        assert ("pass" if check["passed"] else "**FAIL**") in row or "not measurable" in row


def test_a_registry_baseline_is_named_by_its_uri_in_the_reports(tracked_run, tmp_path: Path) -> None:
    """The pipeline's own gate (not the `gate` command) with ``gate.baseline`` an MLflow URI: the file
    is downloaded to a temporary folder, and gate.json and gate.md name the URI."""
    summary = tracked_run["summary"]
    uri = summary["mlflow.baseline_uri"]
    assert uri.startswith("runs:/")
    recipe = load_recipe(RECIPE, [*TINY, f"gate.baseline={uri}", f"tracking.tracking_uri={tracked_run['uri']}"])
    model = tracked_run["out"] / "model.onnx"
    baseline = baseline_path(recipe, model)
    assert baseline is not None and str(baseline) != uri and not baseline.is_relative_to(tracked_run["out"])
    data = RunContext(recipe, tmp_path / "ctx", show_progress=False).evaluation_data()
    verdict = evaluate_gate(recipe, model, data, baseline_file=baseline, show_progress=False)
    write_gate_report(verdict, tmp_path / "report")
    assert json.loads((tmp_path / "report" / GATE_JSON).read_text())["baseline_model"] == uri
    text = (tmp_path / "report" / GATE_MD).read_text()
    assert f"baseline: `{uri}`" in text and str(baseline) not in text


@pytest.mark.parametrize("recipe", DEMO_RECIPES, ids=lambda p: p.name)
def test_demo_recipes_register_to_the_demo_alias(recipe: Path) -> None:
    """A demo (embedded digits data) moves `demo`; `production` is the user's to give."""
    tracking = yaml.safe_load(recipe.read_text())["tracking"]
    assert tracking["alias"] == "demo", recipe


def test_no_shipped_recipe_moves_production() -> None:
    shipped = [*ROOT.glob("recipes/**/*.yaml"), *ROOT.glob("examples/**/*.yaml")]
    assert len(shipped) > 100
    aliases = {p: (yaml.safe_load(p.read_text()).get("tracking") or {}).get("alias") for p in shipped}
    assert not [p for p, alias in aliases.items() if alias == "production"]
