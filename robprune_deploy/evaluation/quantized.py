"""Robustness of an INT8 (QDQ) ONNX model, measured like the FP32 one on the same fixed subset.

Quantization can hide robustness loss behind gradient masking: rounding has a zero gradient almost
everywhere, so PGD on a naive float twin of the INT8 graph looks weak. Two white-box attacks are
therefore crafted and every adversarial input is classified by the INT8 onnxruntime session:
PGD on the straight-through twin of the quantized graph, and PGD transferred from the FP32 twin.
An example counts as robust only when it survives both (the worst case per example). The
black-box Square attack queries the INT8 session itself, and the attack-failure indicators are
measured on the straight-through twin.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from robprune_deploy.arguments import check_batch_list
from robprune_deploy.attacks import ThreatModel, pgd
from robprune_deploy.evaluation.indicators import Indicator, measure_indicators
from robprune_deploy.evaluation.parity import parity
from robprune_deploy.evaluation.sessions import OnnxClassifier
from robprune_deploy.evaluation.square import square_attack
from robprune_deploy.evaluation.twin import torch_twin
from robprune_deploy.export import load_onnx


@dataclass(frozen=True)
class Int8Robustness:
    """Every robustness figure of one INT8 model (fractions), beside its FP32 model's predictions.

    ``pgd_acc`` is the per-example worst case of ``ste_pgd_acc`` (PGD on the straight-through twin)
    and ``transfer_pgd_acc`` (PGD on the FP32 twin); ``agreement`` is INT8 vs FP32 argmax on clean
    inputs; ``max_abs_diff`` and ``twin_agreement`` compare the straight-through twin with onnxruntime.
    """

    provider: str
    examples: int
    clean_acc: float
    agreement: float
    pgd_acc: float | None
    ste_pgd_acc: float | None
    transfer_pgd_acc: float | None
    square_acc: float | None
    square_examples: int
    max_abs_diff: float
    twin_agreement: float
    indicators: dict[str, Indicator] = field(default_factory=dict)
    eps: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["indicators"] = {k: v.to_dict() for k, v in self.indicators.items()}
        return data


def _robust_mask(
    model: nn.Module, session: OnnxClassifier, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, batch: int
) -> np.ndarray:
    """Per example: still classified correctly by ``session`` after PGD crafted on ``model``."""
    masks = []
    for start in range(0, len(y), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        x_adv = pgd(model, xb, yb, threat).cpu()
        masks.append(session.predict(x_adv.numpy()).argmax(1) == yb.numpy())
    return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)


def evaluate_int8(
    path: str | os.PathLike[str],
    fp32_path: str | os.PathLike[str],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    fp32_twin: nn.Module | None = None,
    threat: ThreatModel | None = None,
    providers: Sequence[str] = ("cuda", "cpu"),
    square_queries: int = 0,
    square_p_init: float = 0.8,
    square_examples: int | None = None,
    seed: int = 0,
    indicator_examples: int = 0,
    indicator_steps: int = 100,
    indicator_limits: Mapping[str, float] | None = None,
    batch_size: int = 256,
    show_progress: bool = False,
) -> Int8Robustness:
    """Clean, white-box (straight-through and transferred, worst case) and black-box accuracy of the
    INT8 ONNX file at ``path`` under onnxruntime, and its argmax agreement with the FP32 file.

    :param fp32_path: the FP32 model the INT8 one was quantized from.
    :param fp32_twin: the differentiable twin of ``fp32_path`` (default: converted from the file).
    """
    batches = check_batch_list(batches, "evaluate_int8")
    session = OnnxClassifier(path, providers)
    reference = OnnxClassifier(fp32_path, providers)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    logits = session.predict(x.numpy())
    clean = logits.argmax(1) == y.numpy()
    agreement = float((logits.argmax(1) == reference.predict(x.numpy()).argmax(1)).mean())
    twin = torch_twin(load_onnx(path), f"candidate {path}").cpu()
    check = parity(twin, session, batches)
    ste = transfer = None
    if threat is not None:
        if fp32_twin is None:
            fp32_twin = torch_twin(load_onnx(fp32_path), f"baseline {fp32_path}")
        source = fp32_twin.eval().cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            ste = _robust_mask(twin, session, x, y, threat, batch_size)
            torch.manual_seed(seed)
            transfer = _robust_mask(source, session, x, y, threat, batch_size)
    square_acc, square_n = None, 0
    if threat is not None and square_queries > 0:
        n = len(y) if square_examples is None else min(square_examples, len(y))
        result = square_attack(
            session.predict, x[:n].numpy(), y[:n].numpy(), threat.eps, square_queries, square_p_init, seed
        )
        square_acc, square_n = result.accuracy, n
    pgd_acc = None if ste is None or transfer is None else float((ste & transfer).mean())
    indicators: dict[str, Indicator] = {}
    if threat is not None and indicator_examples > 0:
        chosen = np.flatnonzero(clean)[:indicator_examples]
        gain = None if square_acc is None or pgd_acc is None else pgd_acc - square_acc
        indicators = measure_indicators(
            twin,
            session,
            x[chosen],
            y[chosen],
            threat.eps,
            blackbox_gain=gain,
            steps=indicator_steps,
            seed=seed,
            limits=dict(indicator_limits or {}),
            show_progress=show_progress,
        )
    return Int8Robustness(
        provider=session.provider,
        examples=len(y),
        clean_acc=float(clean.mean()),
        agreement=agreement,
        pgd_acc=pgd_acc,
        ste_pgd_acc=None if ste is None else float(ste.mean()),
        transfer_pgd_acc=None if transfer is None else float(transfer.mean()),
        square_acc=square_acc,
        square_examples=square_n,
        max_abs_diff=check.max_abs_diff,
        twin_agreement=check.argmax_agreement,
        indicators=indicators,
        eps=threat.eps if threat is not None else None,
    )
