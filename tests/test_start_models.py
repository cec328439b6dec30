"""The committed start models of the verdicts: tensors only, the recorded bytes, the recorded figures."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_fashion_mnist import REAL_ROOT  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "benchmarks" / "start_models"
RECORDS = sorted(SHIPPED.glob("*.json"))


def test_the_quick_start_and_the_s2ap_start_models_are_shipped() -> None:
    assert {"digits_cnn", "fmnist_cnn"} <= {record.stem for record in RECORDS}


@pytest.mark.parametrize("record_file", RECORDS, ids=[r.stem for r in RECORDS])
def test_a_shipped_start_model_is_its_recorded_bytes_and_tensors_only(record_file: Path) -> None:
    record = json.loads(record_file.read_text())
    checkpoint = SHIPPED / record["checkpoint"]
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == record["sha256"]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # refuses anything but tensors
    weights = state.get("model", state)
    assert weights and all(isinstance(v, torch.Tensor) for v in weights.values())
    assert record["plateau"]["plateaued"] is True  # shipped only once validation PGD stopped improving
    cycles = [*record.get("earlier_cycles", []), record["recipe"]]  # a warm restart's curve starts with the first's
    epochs = sum(yaml.safe_load((SHIPPED / cycle).read_text())["pretrain"]["epochs"] for cycle in cycles)
    assert len(record["curve"]["val_pgd_acc"]) == epochs  # the whole training's curve, across resumes and cycles


@pytest.mark.parametrize("record_file", RECORDS, ids=[r.stem for r in RECORDS])
def test_a_shipped_start_model_reproduces_its_recorded_validation_figures(record_file: Path) -> None:
    """``start_models.py check`` reloads the checkpoint (``weights_only=True``) and must give the
    recorded clean and PGD-10 accuracy on the first 100 validation images exactly."""
    record = json.loads(record_file.read_text())
    data = yaml.safe_load((SHIPPED / record["recipe"]).read_text())["data"]["name"]
    roots: list[str] = []
    if data == "fashion_mnist":
        if REAL_ROOT is None:
            pytest.skip("the Fashion-MNIST IDX files are not on this machine")
        roots = ["--fmnist-root", str(REAL_ROOT)]
    command = [sys.executable, str(REPO / "benchmarks" / "start_models.py"), "check", record_file.stem]
    proc = subprocess.run(
        [*command, "--check-examples", "100", *roots],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout)
    assert figures["measured"] == figures["recorded"]
    assert figures["measured"]["examples"] == 100 and 0.2 < figures["measured"]["pgd10_acc"] < 1.0  # chance: 0.1
