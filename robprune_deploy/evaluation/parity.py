"""Agreement between the torch model and its ONNX export under onnxruntime."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robprune_deploy.evaluation.runtimes import Predictor


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    argmax_agreement: float
    examples: int


def parity(model: nn.Module, session: Predictor, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Parity:
    """Max absolute logit difference and top-1 agreement, torch (eval, CPU) vs onnxruntime.

    A NaN or inf on either side makes the difference NaN/inf, never 0: ``max(0.0, nan)`` is 0.0.
    """
    model = model.eval()
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")  # a twin may hold only buffers
    worst, agree, total = 0.0, 0, 0
    for x, _ in batches:
        with torch.no_grad():
            expected = model(x.to(device)).cpu().numpy()
        got = session.predict(x.numpy())
        diff = float(np.max(np.abs(expected - got))) if expected.size else 0.0  # np.max propagates NaN
        if math.isfinite(worst) and not diff <= worst:  # a NaN difference compares False: it replaces worst
            worst = diff
        agree += int((expected.argmax(1) == got.argmax(1)).sum())
        total += len(x)
    return Parity(worst, agree / max(total, 1), total)
