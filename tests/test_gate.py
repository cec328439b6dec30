"""`robprune gate`: exit codes, promotion through aliases, false-pass guards, repeatability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import overrides  # type: ignore[import-not-found]
from mlflow import MlflowClient

from robprune_deploy.attacks import ThreatModel
from robprune_deploy.cli.main import main
from robprune_deploy.data import make_loader
from robprune_deploy.export import export_onnx
from robprune_deploy.models import build_model
from robprune_deploy.training import TrainingPlan, adversarial_train

GATE = [
    "evaluate.num_examples=150",
    "evaluate.square_queries=40",
    "evaluate.square_examples=40",
    "evaluate.apgd_steps=20",
    "evaluate.curve_steps=20",
    "evaluate.curve_examples=60",
    "evaluate.indicator_examples=30",
    "evaluate.latency.repeats=3",
    "evaluate.latency.warmup=1",
]


def gate(digits_run, model: str, report: Path, *sets: str, register: str | None = None) -> int:
    args = [
        "gate",
        model,
        "--recipe",
        str(digits_run["recipe"]),
        "--report",
        str(report),
        "--tracking-uri",
        digits_run["uri"],
        "--quiet",
        *overrides(*GATE, *sets),
    ]
    if register:
        args += ["--register", register, "--alias", "production"]
    return main(args)


def test_passing_model_gets_the_alias_and_an_impossible_threshold_leaves_it(digits_run, tmp_path) -> None:
    client = MlflowClient(digits_run["uri"])
    version = str(client.search_model_versions("name='digits-test'")[0].version)
    uri = f"models:/digits-test/{version}"
    # No gate.baseline: the registry version carries the dense model its run logged beside it.
    assert (
        gate(
            digits_run,
            uri,
            tmp_path / "pass",
            "gate.min_clean_acc=0.3",
            "gate.min_pgd_acc=0.05",
            "gate.max_pgd_drop=0.3",
            register="digits-test",
        )
        == 0
    )
    passed = json.loads((tmp_path / "pass" / "gate.json").read_text())
    assert passed["baseline_model"].endswith("dense.onnx") and passed["registered_version"] == version
    # fetched from the registry, and named by its URI, not by the temporary file it was downloaded to
    assert passed["baseline_model"].startswith("runs:/")
    drop = next(c for c in passed["checks"] if c["name"] == "max_pgd_drop")
    assert drop["measured"] == pytest.approx(passed["baseline"]["pgd_acc"] - passed["candidate"]["pgd_acc"])
    assert str(client.get_model_version_by_alias("digits-test", "production").version) == version
    assert client.get_model_version("digits-test", version).tags["gate.passed"] == "true"

    # A second candidate that fails must not take the alias.
    model = str(digits_run["out"] / "model.onnx")
    assert (
        gate(
            digits_run,
            model,
            tmp_path / "fail",
            "gate.min_clean_acc=0.999",
            "gate.max_pgd_drop=0.3",
            "gate.min_pgd_acc=0.05",
            register="digits-test",
        )
        == 1
    )
    assert str(client.get_model_version_by_alias("digits-test", "production").version) == version
    newest = max(client.search_model_versions("name='digits-test'"), key=lambda v: int(v.version))
    assert str(newest.version) != version and newest.tags["gate.passed"] == "false"
    assert "min_clean_acc" in newest.tags["gate.failures"]
    report = json.loads((tmp_path / "fail" / "gate.json").read_text())
    assert report["passed"] is False and report["failures"] == ["min_clean_acc"]
    assert "| min_clean_acc |" in (tmp_path / "fail" / "gate.md").read_text()
    assert (tmp_path / "fail" / "gate.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("case", "needle"),
    [("truncated", "unreadable or corrupted"), ("negative", "gate.min_pgd_acc"), ("no_root", "data.root")],
)
def test_bad_input_exits_2_with_one_line(digits_run, tmp_path, capsys, case, needle) -> None:
    model = digits_run["out"] / "model.onnx"
    sets: list[str] = []
    if case == "truncated":
        broken = tmp_path / "model.onnx"
        broken.write_bytes(model.read_bytes()[:2000])
        model = broken
    elif case == "negative":
        sets = ["gate.min_pgd_acc=-0.2"]
    else:
        sets = ["data.name=cifar10", f"data.root={tmp_path / 'missing'}"]
    assert gate(digits_run, str(model), tmp_path / "r", *sets) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err
    assert not (tmp_path / "r" / "gate.json").exists()


def test_a_model_without_adversarial_training_fails_the_robust_accuracy_check(digits, digits_run, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, 1, digits.mean, digits.std)
    adversarial_train(
        model,
        TrainingPlan(epochs=4, lr=0.05),
        ThreatModel(0.0, 0.01, 0),
        lambda e: make_loader(digits.train, 32, shuffle=True, epoch=e),
        device=torch.device("cpu"),
        show_progress=False,
    )
    path = export_onnx(model, tmp_path / "undefended.onnx", digits.test.tensors[0][:1])
    assert gate(digits_run, str(path), tmp_path / "r", "gate.min_clean_acc=0.8", "gate.min_pgd_acc=0.1") == 1
    report = json.loads((tmp_path / "r" / "gate.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["min_clean_acc"]["passed"] and not checks["min_pgd_acc"]["passed"]
    assert checks["min_pgd_acc"]["measured"] < 0.05


def test_the_same_gate_twice_gives_identical_numbers(digits_run, tmp_path) -> None:
    model = str(digits_run["out"] / "model.onnx")
    reports = []
    for name in ("a", "b"):
        assert (
            gate(
                digits_run,
                model,
                tmp_path / name,
                "gate.min_clean_acc=0.3",
                "gate.max_pgd_drop=0.3",
                "gate.min_pgd_acc=0.05",
            )
            == 0
        )
        reports.append(json.loads((tmp_path / name / "gate.json").read_text()))

    def robust_figures(report: dict) -> dict:
        # Latency is a measurement of the machine, not of the model; every other number must repeat.
        return {
            "candidate": {k: v for k, v in report["candidate"].items() if k not in ("latency_ms", "speedup")},
            "baseline": {k: v for k, v in report["baseline"].items() if k not in ("latency_ms", "speedup")},
            "checks": [c for c in report["checks"] if c["name"] != "min_speedup"],
            "subset": report["subset"],
        }

    assert robust_figures(reports[0]) == robust_figures(reports[1])
    assert reports[0]["subset"] == {"examples": 150, "seed": 0}


def test_gate_inside_an_mlflow_project_run_records_the_failed_verdict_on_that_run(
    digits_run, tmp_path, monkeypatch, capsys
) -> None:
    """As the MLproject `gate` step: `mlflow run` created the run (in the recipe's experiment) and passed
    it in MLFLOW_RUN_ID. The failure lands on that run as tags, metrics and gate.md, and the command
    ends with the verdict line (exit 1), not a traceback."""
    client = MlflowClient(digits_run["uri"])
    experiment = client.get_experiment_by_name("robprune-digits")
    project_run = client.create_run(experiment.experiment_id, tags={"mlflow.project.entryPoint": "gate"})
    monkeypatch.setenv("MLFLOW_RUN_ID", project_run.info.run_id)
    model = str(digits_run["out"] / "model.onnx")
    sets = ("gate.min_clean_acc=0.999", "gate.min_pgd_acc=0.05", "gate.max_pgd_drop=0.3")
    assert gate(digits_run, model, tmp_path / "r", *sets) == 1
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict == f"gate FAILED: min_clean_acc ({tmp_path / 'r' / 'gate.md'})"
    run = client.get_run(project_run.info.run_id)
    assert run.data.tags["gate.passed"] == "false" and run.data.tags["gate.failures"] == "min_clean_acc"
    assert run.data.metrics["gate_passed"] == 0.0 and run.data.metrics["gate.min_clean_acc"] < 0.999
    assert {"gate/gate.md", "gate/gate.json", "gate/gate.png"} <= {
        a.path for a in client.list_artifacts(run.info.run_id, "gate")
    }
    assert run.data.params["gate.min_clean_acc"] == "0.999"


def test_baseline_none_measures_no_baseline_and_refuses_the_checks_that_need_one(digits_run, tmp_path, capsys) -> None:
    # model.onnx has its dense.onnx beside it, which gate.baseline: none leaves unmeasured
    model = str(digits_run["out"] / "model.onnx")
    # the recipe's drop check off, and its PGD floor and the indicators (this test is about the baseline)
    alone = ("gate.baseline=none", "gate.max_pgd_drop=null", "gate.min_pgd_acc=null", "gate.indicators=[]")
    alone = (*alone, "gate.min_clean_acc=0.3")
    assert gate(digits_run, model, tmp_path / "alone", *alone) == 0
    report = json.loads((tmp_path / "alone" / "gate.json").read_text())
    assert report["baseline"] is None and set(report["robustness"]) == {"candidate"}
    assert report["passed"] and "min_clean_acc" in {c["name"] for c in report["checks"]}
    capsys.readouterr()
    assert gate(digits_run, model, tmp_path / "drop", "gate.baseline=none", "gate.max_pgd_drop=0.3") == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "baseline: none measures no baseline, but max_pgd_drop compares to one" in error[0]
    assert not (tmp_path / "drop").exists()


def test_drop_checks_without_a_baseline_say_how_to_set_one_and_speedup_noise_is_not_a_verdict() -> None:
    from robprune_deploy.gate.checks import Measurements, run_checks
    from robprune_deploy.recipe import GateSection

    gate_section = GateSection(max_pgd_drop=0.1, min_speedup=1.2, max_parity_error=None, indicators=[])
    alone = run_checks(gate_section, Measurements(clean_acc=0.9, pgd_acc=0.4), None)
    assert [(c.name, c.passed, c.detail) for c in alone] == [
        ("max_pgd_drop", False, "no baseline: set gate.baseline"),
        ("min_speedup", False, "no baseline: set gate.baseline"),
    ]
    noisy = {"ratio": 1.5, "low": 0.6, "high": 2.4, "measurable": False, "reason": "too noisy (95% interval 0.60-2.40)"}
    clear = {"ratio": 1.5, "low": 1.1, "high": 1.9, "measurable": True, "reason": ""}
    base = Measurements(clean_acc=0.9, pgd_acc=0.4)
    for speedup, passed, measurable in ((noisy, True, False), (clear, False, True)):
        (_, check) = run_checks(gate_section, Measurements(clean_acc=0.9, pgd_acc=0.4, speedup=speedup), base)
        assert (check.passed, check.measurable) == (passed, measurable)  # the lower bound 1.1 < 1.2 fails


def test_a_tiny_model_speedup_is_not_measurable(tmp_path) -> None:
    from robprune_deploy.evaluation import OnnxClassifier, compare_speed

    tiny = export_onnx(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), tmp_path / "t.onnx", torch.rand(1, 1, 2, 2)
    )
    session = OnnxClassifier(tiny, ["cpu"])
    _, _, speedup = compare_speed(session, session, (1, 2, 2), batch=1, warmup=2, repeats=30)
    assert not speedup.measurable and "too fast" in speedup.reason
    assert speedup.low <= 1.0 <= speedup.high or not speedup.measurable
