"""Crash safety: a run killed with SIGKILL and resumed ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST_RUN, overrides, subprocess_env  # type: ignore[import-not-found]
from mlflow import MlflowClient

from robprune_deploy.checkpoints import load_checkpoint


def robprune(*args: str) -> list[str]:
    return [sys.executable, "-m", "robprune_deploy.cli.main", *args]


KILL_POINTS = {
    # stage: (the per-epoch checkpoint to wait for, the epoch it must hold, extra overrides)
    "pretrain": ("pretrain_last.pt", 1, []),
    # Starts from the reference run's pretrained weights, so the kill lands in the mask search sooner.
    "prune": ("prune_search_last.pt", 0, ["model.checkpoint={pretrained}"]),
}


@pytest.mark.parametrize("stage", list(KILL_POINTS))
def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(digits_run, tmp_path: Path, stage: str) -> None:
    name, epoch, extra = KILL_POINTS[stage]
    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    pretrained = digits_run["out"] / "pretrained.pt"
    args = [
        "run",
        str(digits_run["recipe"]),
        "--out",
        str(out),
        "--quiet",
        "--tracking-uri",
        uri,
        *overrides(
            *FAST_RUN,
            "tracking.registered_model=digits-test",
            "tracking.alias=candidate",
            *(e.format(pretrained=pretrained) for e in extra),
        ),
    ]
    env = subprocess_env(OMP_NUM_THREADS="2")
    proc = subprocess.Popen(robprune(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoints" / name
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.is_file() and load_checkpoint(checkpoint)["epoch"] >= epoch:
            time.sleep(0.5)  # somewhere inside the next epoch
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else {}
    assert stage not in state  # the kill landed inside the stage
    killed_epoch = load_checkpoint(checkpoint)["epoch"]
    assert epoch <= killed_epoch < {"pretrain": 4, "prune": 1}[stage]

    resumed = subprocess.run(robprune(*args, "--resume"), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    reference = digits_run["summary"]
    for key in (
        "params_pruned",
        "macs_pruned",
        "sparsity",
        "torch.dense_clean_acc",
        "torch.dense_pgd_acc",
        "torch.clean_acc",
        "torch.pgd_acc",
        "onnx.clean_acc",
        "onnx.pgd_acc",
    ):
        assert summary[key] == reference[key], key
    ours, theirs = load_checkpoint(out / "pruned.pt"), load_checkpoint(digits_run["out"] / "pruned.pt")
    for name, mask in theirs["masks"].items():
        assert torch.equal(ours["masks"][name], mask), name
    ours, theirs = (
        load_checkpoint(out / "finetuned.pt")["model"],
        load_checkpoint(digits_run["out"] / "finetuned.pt")["model"],
    )
    for name, value in theirs.items():
        assert torch.allclose(ours[name].float(), value.float(), atol=1e-6), name

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    killed = [r for r in runs if r.info.status == "FAILED"]
    assert killed and all("interrupted" in r.data.tags["error"] for r in killed)
