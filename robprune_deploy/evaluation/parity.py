"""Agreement between the torch model and its ONNX export under onnxruntime."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robprune_deploy.evaluation.sessions import OnnxClassifier


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    argmax_agreement: float
    examples: int


def parity(model: nn.Module, session: OnnxClassifier, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Parity:
    """Max absolute logit difference and top-1 agreement, torch (eval, CPU) vs onnxruntime."""
    model = model.eval()
    device = next(model.parameters()).device
    worst, agree, total = 0.0, 0, 0
    for x, _ in batches:
        with torch.no_grad():
            expected = model(x.to(device)).cpu().numpy()
        got = session.predict(x.numpy())
        worst = max(worst, float(np.abs(expected - got).max()))
        agree += int((expected.argmax(1) == got.argmax(1)).sum())
        total += len(x)
    return Parity(worst, agree / max(total, 1), total)
