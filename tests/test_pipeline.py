"""`robprune run` end to end on digits, tracked in a real (temporary) MLflow store."""

from __future__ import annotations

import math
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime as ort
import pytest
import torch
from clitools import RECIPES, cli, one_error, sets  # type: ignore[import-not-found]
from conftest import FAST_RUN, overrides  # type: ignore[import-not-found]
from mlflow import MlflowClient

from robprune_deploy.cli.main import main
from robprune_deploy.errors import RobPruneError
from robprune_deploy.pipeline import RunContext
from robprune_deploy.pipeline.driver import run_pipeline
from robprune_deploy.pipeline.ownership import recipe_fingerprint
from robprune_deploy.recipe import load_recipe
from robprune_deploy.tracking.mlflow_tracker import MlflowTracker

SUMMARY_KEYS = {
    "algorithm",
    "granularity",
    "target_ratio",
    "params_dense",
    "params_pruned",
    "macs_dense",
    "macs_pruned",
    "torch.clean_acc",
    "torch.pgd_acc",
    "onnx.clean_acc",
    "onnx.pgd_acc",
    "onnx.square_acc",
    "onnx.autoattack_acc",
    "onnx.apgd_ce_acc",
    "onnx.apgd_t_acc",
    "onnx.attacks",
    "onnx.attack_budget",
    "onnx.median_linf_distance",
    "onnx.dense_autoattack_acc",
    "onnx.max_abs_diff",
    "onnx.provider",
    "latency.dense_ms",
    "latency.pruned_ms",
    "latency.batch",
    "gate.passed",
    "gate.failures",
    "mlflow.run_id",
    "mlflow.model_uri",
}


def test_summary_has_the_contract_keys_and_sane_values(digits_run) -> None:
    summary, out = digits_run["summary"], digits_run["out"]
    assert set(summary) >= SUMMARY_KEYS
    assert summary["algorithm"] == "hydra" and summary["granularity"] == "unstructured"
    assert summary["params_pruned"] < 0.15 * summary["params_dense"]
    assert summary["onnx.max_abs_diff"] < 1e-4 and summary["onnx.provider"] in ("cpu", "cuda")
    assert summary["onnx.clean_acc"] == pytest.approx(summary["torch.clean_acc"], abs=0.01)
    assert 0 <= summary["onnx.pgd_acc"] <= summary["onnx.clean_acc"]
    # the ensemble is the per-example worst case: never above any of its members or plain PGD
    assert summary["onnx.autoattack_acc"] <= summary["onnx.apgd_t_acc"] <= summary["onnx.apgd_ce_acc"]
    assert summary["onnx.autoattack_acc"] <= summary["onnx.pgd_acc"]
    assert (
        summary["onnx.attacks"] == "autoattack-fast" and "apgd-t 20 steps x 3 targets" in summary["onnx.attack_budget"]
    )
    assert 0 < summary["onnx.median_linf_distance"] < 1
    assert all(math.isfinite(summary[f"indicators.{name}"]) for name in ("silent_success", "unavailable_gradients"))
    for name in (
        "model.onnx",
        "dense.onnx",
        "report.md",
        "gate.json",
        "gate.md",
        "gate.png",
        "security_curve.png",
        "layers.png",
        "training.png",
    ):
        assert (out / name).is_file(), name
    assert "## Gate" in (out / "report.md").read_text()


def test_outcomes_json_holds_the_per_example_verdicts_behind_the_figures(digits_run) -> None:
    from robprune_deploy.evaluation.outcome_files import OUTCOMES_FILE, examples_sha256, read_outcomes

    summary, out = digits_run["summary"], digits_run["out"]
    stored = read_outcomes(out / OUTCOMES_FILE)
    assert stored.examples == summary["onnx.examples"] == summary["torch.examples"] == 200
    assert set(stored.figures) == {"clean", "pgd", "autoattack"}
    assert stored.accuracy("clean") == summary["onnx.clean_acc"]
    assert stored.accuracy("pgd") == summary["onnx.pgd_acc"]
    assert stored.accuracy("autoattack") == summary["onnx.autoattack_acc"]
    assert len(stored.figures["autoattack"]) == summary["onnx.autoattack_examples"] == 200
    # an example broken by PGD or the ensemble was classified correctly before, or not at all
    assert not (stored.figures["pgd"] & ~stored.figures["clean"]).any()
    assert not (stored.figures["autoattack"] & ~stored.figures["clean"]).any()
    recipe = load_recipe(out / "recipe.yaml")
    assert stored.subset_sha256 == examples_sha256(RunContext(recipe, out, show_progress=False).eval_subset_batches())
    assert stored.record["split"] == "test" and stored.record["pgd_steps"] == recipe.attack.eval_steps


def test_torch_examples_takes_the_first_examples_of_the_evaluation_subset(digits_run, tmp_path: Path) -> None:
    from robprune_deploy.data import first_examples
    from robprune_deploy.pipeline import stages
    from robprune_deploy.training import evaluate_robustness

    recipe = load_recipe(digits_run["out"] / "recipe.yaml", ["evaluate.torch_examples=70"])
    ctx = RunContext(recipe, tmp_path, show_progress=False)
    batches = ctx.eval_subset_batches()
    first = first_examples(batches, 70)
    assert [len(y) for _, y in first] == [70] and torch.equal(first[0][0], batches[0][0][:70])
    model = ctx.new_model()
    figures = stages.robustness(ctx, model)
    threat = recipe.attack.threat(recipe.attack.eval_steps)
    assert figures == {**evaluate_robustness(model, first, ctx.device, threat, seed=0), "examples": 70.0}
    assert first_examples(batches, None) is batches
    assert [len(y) for _, y in first_examples(batches, 10_000)] == [len(y) for _, y in batches] == [200]


def test_mlflow_has_the_parent_run_nested_stages_metrics_plots_and_models(digits_run) -> None:
    mlflow.set_tracking_uri(digits_run["uri"])
    client = MlflowClient()
    parent = client.get_run(digits_run["summary"]["mlflow.run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["algorithm"] == "hydra" and parent.data.tags["dataset"] == "digits"
    assert parent.data.params["compression.ratio"] == "0.9"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    stages = {r.data.tags.get("stage"): r for r in children}
    assert {"pretrain", "prune", "finetune", "export", "evaluate", "gate"} <= set(stages)
    assert all(r.info.status == "FINISHED" for r in children)
    losses = client.get_metric_history(stages["pretrain"].info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3, 4, 5]  # epochs counted from 1, as in the plots and progress
    flips = client.get_metric_history(stages["prune"].info.run_id, "mask_flips")
    assert len(flips) == 2
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"recipe.yaml", "summary.json", "report.md", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/layers.png", "plots/training.png"} <= plots
    gate_files = {a.path for a in client.list_artifacts(stages["gate"].info.run_id, "gate")}
    assert {"gate/gate.json", "gate/gate.md", "gate/security_curve.png"} <= gate_files
    evaluated = client.get_run(stages["evaluate"].info.run_id).data.metrics
    assert evaluated["onnx.autoattack_acc"] <= evaluated["onnx.pgd_acc"]
    versions = client.search_model_versions("name='digits-test'")
    assert len(versions) >= 1
    models = client.search_logged_models(experiment_ids=[parent.info.experiment_id])
    ours = [m for m in models if m.source_run_id == parent.info.run_id]  # on the parent's page
    assert {m.name for m in ours} == {"torch_model", "onnx_model"}
    onnx_model = next(m for m in ours if m.name == "onnx_model")
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=onnx_model.artifact_location))
    runtimes = [r for r in (folder / "requirements.txt").read_text().split() if r.startswith("onnxruntime")]
    assert len(runtimes) == 1, runtimes  # onnxruntime and onnxruntime-gpu overwrite each other
    torch_model = next(m for m in ours if m.name == "torch_model")
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=torch_model.artifact_location))
    pinned = dict(r.split("==") for r in (folder / "requirements.txt").read_text().split() if "==" in r)
    assert pinned["torch"] == metadata.version("torch") and {"cloudpickle", "numpy"} <= set(pinned)


def test_logged_onnx_model_loads_back_with_the_same_predictions(digits_run) -> None:
    mlflow.set_tracking_uri(digits_run["uri"])
    loaded = mlflow.pyfunc.load_model(digits_run["summary"]["mlflow.model_uri"])
    x = np.random.default_rng(0).random((8, 1, 16, 16), dtype=np.float32)
    session = ort.InferenceSession(str(digits_run["out"] / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": x})[0]
    got = loaded.predict(x)
    got = np.asarray(got["logits"] if isinstance(got, dict) else got)
    assert np.abs(got - expected).max() < 1e-5


def test_crash_mid_pipeline_marks_the_runs_failed_with_the_error(digits_run, tmp_path: Path) -> None:
    """Finetune diverges (lr 1e12): pretrain and prune finished, finetune and the parent FAILED."""
    recipe = load_recipe(
        digits_run["recipe"],
        [
            *FAST_RUN,
            f"model.checkpoint={digits_run['out'] / 'pretrained.pt'}",
            "finetune.lr=1e12",
            "finetune.momentum=0",
            "compression.config.epochs=1",
            "tracking.registered_model=null",
        ],
    )
    ctx = RunContext(recipe, tmp_path / "out", show_progress=False)
    ctx.tracker = MlflowTracker(digits_run["uri"], "crash-test")
    with pytest.raises((FloatingPointError, RobPruneError)):
        run_pipeline(ctx)
    client = MlflowClient(digits_run["uri"])
    parent = client.get_run(ctx.tracker.run_id)
    assert parent.info.status == "FAILED" and "NumericalError: finetune: epoch 1" in parent.data.tags["error"]
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    status = {r.data.tags["stage"]: r.info.status for r in children}
    assert status == {"pretrain": "FINISHED", "prune": "FINISHED", "finetune": "FAILED"}
    assert not (tmp_path / "out" / "summary.json").exists()


def test_resume_skips_completed_stages_and_reproduces_the_summary(digits_run, tmp_path: Path) -> None:
    """A second `run --resume` in the finished folder recomputes nothing and agrees on every number."""
    out = tmp_path / "copy"
    import shutil

    shutil.copytree(digits_run["out"], out)
    before = (out / "pretrained.pt").stat().st_mtime_ns
    code = main(
        [
            "run",
            str(digits_run["recipe"]),
            "--out",
            str(out),
            "--resume",
            "--quiet",
            *overrides(*FAST_RUN, "tracking.enabled=false"),
        ]
    )
    assert code == 0
    assert (out / "pretrained.pt").stat().st_mtime_ns == before
    import json

    again = json.loads((out / "summary.json").read_text())
    assert set(again) >= SUMMARY_KEYS
    for key in (
        "params_pruned",
        "macs_pruned",
        "torch.dense_clean_acc",  # measured by the skipped pretrain stage, restored from state.json
        "torch.dense_pgd_acc",
        "torch.clean_acc",
        "torch.pgd_acc",
        "onnx.clean_acc",
        "onnx.pgd_acc",
    ):
        assert math.isclose(again[key], digits_run["summary"][key]), key


def _pretrain_from(digits_run, checkpoint: str, out: Path) -> int:
    return main(
        [
            "pretrain",
            str(digits_run["recipe"]),
            "--out",
            str(out),
            "--tracking-uri",
            digits_run["uri"],
            "--quiet",
            *overrides(*FAST_RUN, f"model.checkpoint={checkpoint}"),
        ]
    )


def test_stages_chain_across_runs_through_mlflow_uris(digits_run, tmp_path: Path) -> None:
    """The pretrain stage's runs:/ checkpoint and the logged torch model (models:/) start later runs."""
    import torch

    summary = digits_run["summary"]
    pretrained = torch.load(digits_run["out"] / "pretrained.pt", weights_only=True)["model"]
    assert _pretrain_from(digits_run, summary["mlflow.pretrained_uri"], tmp_path / "a") == 0
    again = torch.load(tmp_path / "a" / "pretrained.pt", weights_only=True)["model"]
    assert pretrained.keys() == again.keys() and all(torch.equal(pretrained[k], again[k]) for k in pretrained)

    # The stripped HYDRA model keeps dense shapes, so it loads into the recipe's architecture: 90% zeros.
    assert summary["mlflow.torch_model_uri"].startswith("models:/")
    assert _pretrain_from(digits_run, summary["mlflow.torch_model_uri"], tmp_path / "b") == 0
    pruned = torch.load(tmp_path / "b" / "pretrained.pt", weights_only=True)["model"]
    weights = [v for k, v in pruned.items() if k.endswith("weight") and v.dim() > 1]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.9, abs=0.01)
    client = MlflowClient(digits_run["uri"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "params.checkpoint LIKE 'models:/%'")
    assert [r.data.params["checkpoint"] for r in runs] == [summary["mlflow.torch_model_uri"]]  # the URI as given


def test_from_checkpoint_trains_the_given_model_further_instead_of_taking_it_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = RECIPES.parent / "benchmarks" / "start_models" / "digits_cnn.pt"
    recipe = RECIPES / "digits_hydra_channel.yaml"
    common = [f"model.checkpoint={start}", "tracking.enabled=false", "data.train_subset=256", "pretrain.epochs=1"]
    for name, extra in (("taken", []), ("trained", ["pretrain.from_checkpoint=true"])):
        code, err = cli(capsys, "pretrain", recipe, "--out", tmp_path / name, "--quiet", *sets(*common, *extra))
        assert code == 0, err
    original = torch.load(start, weights_only=True)["model"]
    taken = torch.load(tmp_path / "taken" / "pretrained.pt", weights_only=True)["model"]
    trained = torch.load(tmp_path / "trained" / "pretrained.pt", weights_only=True)["model"]
    assert all(torch.equal(original[k], taken[k]) for k in original)
    moved = [k for k in original if original[k].is_floating_point() and not torch.equal(original[k], trained[k])]
    assert any(k.endswith(".weight") for k in moved), moved  # one epoch of training from the checkpoint
    assert (tmp_path / "trained" / "checkpoints" / "pretrain_last.pt").is_file()  # an epoch ran, resumable

    def fingerprint(*extra: str) -> str:
        return recipe_fingerprint(load_recipe(recipe, [*common, *extra]))

    assert fingerprint("pretrain.epochs=2") == fingerprint()  # taken as it is: pretrain plays no part
    trains = "pretrain.from_checkpoint=true"
    assert fingerprint(trains, "pretrain.epochs=2") != fingerprint(trains)  # a resume must not change the training

    code, err = cli(capsys, "pretrain", RECIPES / "digits_hydra.yaml", "--out", tmp_path / "bad",
                    *sets("pretrain.from_checkpoint=true"))  # fmt: skip
    assert code == 2
    one_error(err, "pretrain.from_checkpoint: trains model.checkpoint further, but model.checkpoint is not set")
    assert not (tmp_path / "bad").exists()


def test_an_mlflow_checkpoint_that_does_not_exist_exits_2(digits_run, tmp_path: Path, capsys) -> None:
    code = _pretrain_from(digits_run, "runs:/0123456789abcdef/checkpoints/pretrained.pt", tmp_path / "c")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "model.checkpoint runs:/0123456789abcdef" in err[0]
    assert not (tmp_path / "c" / "pretrained.pt").exists()


def test_stages_read_only_what_earlier_stages_wrote_and_each_has_its_schema_group() -> None:
    from robprune_deploy.pipeline.driver import STAGES
    from robprune_deploy.pipeline.summary_schema import SUMMARY_SCHEMA

    written: set[str] = set()
    for stage in STAGES:
        assert set(stage.inputs) <= written, (stage.name, set(stage.inputs) - written)
        written |= set(stage.outputs)
    names = [stage.name for stage in STAGES]
    assert len(set(names)) == len(names)
    # one group per stage, in run order, and the run's own keys first
    assert [group.stage for group in SUMMARY_SCHEMA] == ["run", *names]


def test_every_summary_key_is_in_the_schema_and_on_its_reference_page(digits_run) -> None:
    from robprune_deploy.pipeline.summary_schema import SUMMARY_SCHEMA, unknown_keys

    summary = digits_run["summary"]
    unlisted = [key for key in summary if all(unknown_keys(group.stage, [key]) for group in SUMMARY_SCHEMA)]
    assert unlisted == []
    page = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "summary.md").read_text()
    assert [key for group in SUMMARY_SCHEMA for key in group.keys if f"`{key}`" not in page] == []
    assert unknown_keys("evaluate", ["onnx.pgd_acc", "openvino.onnx.pgd_acc", "onnx.pgd_accuracy"]) == [
        "onnx.pgd_accuracy"
    ]
