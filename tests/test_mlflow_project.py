"""`mlflow run` of the robust_pruning project (main entry point) on the digits recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import FAST_RUN, subprocess_env  # type: ignore[import-not-found]
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


def test_mlflow_run_main_entry_point(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    overrides = " ".join([*FAST_RUN, "pretrain.epochs=2", "tracking.experiment=project"])
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [
        str(mlflow),
        "run",
        str(ROOT / "mlflow_projects" / "robust_pruning"),
        "-e",
        "main",
        "--env-manager",
        "local",
        "--experiment-name",
        "project",
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
    summary = json.loads((out / "summary.json").read_text())
    client = MlflowClient(uri)
    parent = client.get_run(summary["mlflow.run_id"])
    # The pipeline's parent run is the project run itself: MLflow projects and robprune share one run.
    assert parent.data.tags.get("mlflow.project.entryPoint") == "main"
    assert parent.info.status == "FINISHED" and (out / "model.onnx").is_file()
