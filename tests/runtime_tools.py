"""Shared by the runtime tests: the digits CNN exported, and a small gate's overrides."""

from __future__ import annotations

from pathlib import Path

import torch

from robprune_deploy.export import export_onnx

# A gate at a small budget: 60 examples, PGD-3 and Square, no curve, no indicators (other tests are
# about those), CPU, tracking off.
GATE = (
    "evaluate.num_examples=60",
    "evaluate.attacks=pgd",
    "evaluate.square_queries=20",
    "evaluate.square_examples=20",
    "evaluate.curve_steps=0",
    "evaluate.indicator_examples=0",
    "evaluate.latency.repeats=3",
    "evaluate.latency.warmup=1",
    "evaluate.providers=[cpu]",
    "attack.eval_steps=3",
    "tracking.enabled=false",
    "gate.indicators=[]",
    "gate.min_clean_acc=0.5",
    "gate.max_pgd_drop=0.3",
)


def exported(model: torch.nn.Module, example: torch.Tensor, folder: Path) -> tuple[Path, Path]:
    """``model.onnx`` and, as its baseline, the same weights as ``dense.onnx``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    return export_onnx(model, folder / "model.onnx", example), export_onnx(model, folder / "dense.onnx", example)
