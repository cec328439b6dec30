"""`mlflow run` of the robust_pruning project (main entry point) on the digits recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import FAST_RUN, PGD_ONLY, subprocess_env  # type: ignore[import-not-found]
from mlflow import MlflowClient

from robprune_deploy.tracking.project import PIPELINE_RUN_TAG, PROJECT_RUN_TAG

ROOT = Path(__file__).resolve().parents[1]


def test_mlflow_run_main_nests_the_stages_in_the_recipes_experiment_and_records_a_failed_gate(
    tmp_path: Path,
) -> None:
    """Without --experiment-name, MLflow puts the project run in Default; the pipeline still lands in
    the recipe's experiment as one parent with nested stages, linked to that project run. The gate's
    impossible threshold fails it: the run completes, records the failure, and ends with the verdict."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    sets = [*FAST_RUN, *PGD_ONLY, "pretrain.epochs=2", "tracking.experiment=project", "gate.min_clean_acc=0.999"]
    overrides = " ".join(sets)
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [
        str(mlflow),
        "run",
        str(ROOT / "mlflow_projects" / "robust_pruning"),
        "-e",
        "main",
        "--env-manager",
        "local",
        "-P",
        f"recipe={ROOT / 'recipes' / 'digits_hydra.yaml'}",
        "-P",
        f"out={out}",
        "-P",
        f"overrides={overrides}",
    ]
    env = subprocess_env(MLFLOW_TRACKING_URI=uri, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if "INFO mlflow.projects" not in line]  # MLflow's own
    # The impossible threshold fails; on so short a run an indicator of a weak attack may fail beside it.
    failures = json.loads((out / "gate.json").read_text())["failures"]
    assert "min_clean_acc" in failures
    assert ours[-1] == f"gate FAILED: {', '.join(failures)} ({out / 'gate.md'})"
    summary = json.loads((out / "summary.json").read_text())
    client = MlflowClient(uri)
    parent = client.get_run(summary["mlflow.run_id"])
    assert client.get_experiment(parent.info.experiment_id).name == "project"
    assert parent.info.status == "FINISHED" and "mlflow.parentRunId" not in parent.data.tags
    project_run = client.get_run(parent.data.tags[PROJECT_RUN_TAG])
    assert project_run.data.tags["mlflow.project.entryPoint"] == "main"
    assert project_run.data.tags[PIPELINE_RUN_TAG] == parent.info.run_id
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    stages = {r.data.tags["stage"]: r for r in children}
    assert set(stages) == {"pretrain", "prune", "finetune", "export", "evaluate", "gate"}
    assert all(r.info.status == "FINISHED" for r in children)
    # The failed gate is on its run as tags, metrics and the report, and on the parent as tags.
    gate = stages["gate"]
    assert gate.data.tags["gate.passed"] == "false" and gate.data.tags["gate.failures"] == ",".join(failures)
    assert gate.data.metrics["gate_passed"] == 0.0 and gate.data.metrics["gate.min_clean_acc"] < 0.999
    assert "gate/gate.md" in {a.path for a in client.list_artifacts(gate.info.run_id, "gate")}
    assert parent.data.tags["gate.passed"] == "false"
    # The parent's page lists the models: they are logged in the parent run.
    models = client.search_logged_models(experiment_ids=[parent.info.experiment_id])
    assert {m.name for m in models} == {"torch_model", "onnx_model"}
    assert {m.source_run_id for m in models} == {parent.info.run_id}
    assert (out / "model.onnx").is_file()
    # Artifacts stay beside the Default experiment's, where `mlflow run` ran, not in the project folder.
    assert str(tmp_path) in client.get_experiment(parent.info.experiment_id).artifact_location
    assert not (ROOT / "mlflow_projects" / "robust_pruning" / "mlruns").exists()
