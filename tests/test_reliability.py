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


def _kill_once_written(proc: subprocess.Popen[bytes], checkpoint: Path, epoch: int, log: Path) -> None:
    """SIGKILL ``proc`` as soon as ``checkpoint`` holds ``epoch``: the stage has finished that epoch
    and is inside the next one (or its bookkeeping). Killing on the observed file, not after a
    sleep, lands in the same place on an idle machine and on a loaded one, however slow the epochs."""
    seen = None
    while proc.poll() is None:
        stamp = checkpoint.stat().st_mtime_ns if checkpoint.is_file() else None
        if stamp is not None and stamp != seen:
            seen = stamp
            if load_checkpoint(checkpoint)["epoch"] >= epoch:
                proc.send_signal(signal.SIGKILL)
                return
        time.sleep(0.02)  # a poll interval, not a guess at where the run is
    pytest.fail(
        f"the run ended (exit {proc.returncode}) before {checkpoint.name} held epoch {epoch}: {log.read_text()[-2000:]}"
    )


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
    # The suite's threads, as the in-process reference run used (conftest exports them).
    env = subprocess_env()
    log = tmp_path / "killed.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(robprune(*args), env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            _kill_once_written(proc, out / "checkpoints" / name, epoch, log)
        finally:
            proc.kill()
            proc.wait()
    checkpoint = out / "checkpoints" / name
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
