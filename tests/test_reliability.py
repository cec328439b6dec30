"""Crash safety: a run killed with SIGKILL and resumed ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import FAST_RUN, overrides, subprocess_env  # type: ignore[import-not-found]
from mlflow import MlflowClient

from robprune_deploy.checkpoints import load_checkpoint


def robprune(*args: str) -> list[str]:
    return [sys.executable, "-m", "robprune_deploy.cli.main", *args]


def test_sigkill_mid_pretrain_epoch_then_resume_matches_the_uninterrupted_run(digits_run, tmp_path: Path) -> None:
    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "run",
        str(digits_run["recipe"]),
        "--out",
        str(out),
        "--quiet",
        "--tracking-uri",
        uri,
        *overrides(*FAST_RUN, "tracking.registered_model=digits-test", "tracking.alias=candidate"),
    ]
    env = subprocess_env(OMP_NUM_THREADS="2")
    proc = subprocess.Popen(robprune(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoints" / "pretrain_last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.is_file() and load_checkpoint(checkpoint)["epoch"] >= 1:
            time.sleep(0.5)  # somewhere inside epoch 2 or 3
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else {}
    assert "pretrain" not in state  # the kill landed inside pretraining
    killed_epoch = load_checkpoint(checkpoint)["epoch"]
    assert 1 <= killed_epoch < 4

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
