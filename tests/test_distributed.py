"""torchrun with two gloo processes on CPU: one MLflow run, identical ranks, single-process sparsity."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import FAST_RUN, PGD_ONLY, overrides, subprocess_env  # type: ignore[import-not-found]
from mlflow import MlflowClient


def test_two_process_run_matches_the_single_process_sparsity(digits_run, tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    env = subprocess_env(processes=2)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "robprune_deploy.cli.main",
        "run",
        str(digits_run["recipe"]),
        "--out",
        str(out),
        "--quiet",
        "--tracking-uri",
        uri,
        *overrides(*FAST_RUN, *PGD_ONLY, "pretrain.epochs=2", "tracking.experiment=ddp"),
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # Every rank hashed its final weights and masks; the run fails if they differ.
    assert summary["distributed.world_size"] == 2 and len(summary["distributed.state_sha256"]) == 64
    assert summary["sparsity"] == digits_run["summary"]["sparsity"]
    assert summary["params_pruned"] == digits_run["summary"]["params_pruned"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ddp")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    stages = [r.data.tags["stage"] for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(stages) == sorted(set(stages))  # one nested run per stage, none duplicated by rank 1


@pytest.mark.parametrize("flag", ["--nproc_per_node"])
def test_torchrun_is_documented(flag: str) -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "how-to" / "torchrun.md").read_text()
    assert f"torchrun {flag}" in page and "--nnodes" in page
