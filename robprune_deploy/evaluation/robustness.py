"""Robust accuracy measured on the deployed ONNX model.

White-box: PGD crafted on the identical torch model, the adversarial batch classified by the
onnxruntime session. Black-box: the Square attack querying the session itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from robprune_deploy.arguments import check_batch_list
from robprune_deploy.attacks import ThreatModel, pgd
from robprune_deploy.evaluation.parity import parity
from robprune_deploy.evaluation.sessions import OnnxClassifier
from robprune_deploy.evaluation.square import square_attack


@dataclass(frozen=True)
class OnnxRobustness:
    provider: str
    examples: int
    clean_acc: float
    pgd_acc: float | None
    square_acc: float | None
    square_examples: int
    max_abs_diff: float | None
    argmax_agreement: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_onnx(
    path: str | os.PathLike[str],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    torch_model: nn.Module | None = None,
    threat: ThreatModel | None = None,
    providers: Sequence[str] = ("cuda", "cpu"),
    square_queries: int = 0,
    square_p_init: float = 0.8,
    square_examples: int | None = None,
    seed: int = 0,
) -> OnnxRobustness:
    """Clean, white-box and black-box accuracy of the ONNX file at ``path`` under onnxruntime.

    :param batches: the (fixed) evaluation batches, inputs in [0, 1].
    :param torch_model: the identical torch model: PGD is crafted on it and parity is checked.
    :param threat: the white-box PGD threat and the Square radius.
    :param square_queries: Square's query budget per example (0 skips the black-box attack).
    """
    batches = check_batch_list(batches, "evaluate_onnx")  # RobPruneError for empty or non-image data
    session = OnnxClassifier(path, providers)
    correct = pgd_correct = total = 0
    for x, y in batches:
        total += len(y)
        correct += int((session.predict(x.numpy()).argmax(1) == y.numpy()).sum())
    pgd_acc = max_diff = agreement = None
    if torch_model is not None:
        check = parity(torch_model.cpu(), session, batches)
        max_diff, agreement = check.max_abs_diff, check.argmax_agreement
        if threat is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for x, y in batches:
                    x_adv = pgd(torch_model.eval(), x, y, threat)
                    pgd_correct += int((session.predict(x_adv.numpy()).argmax(1) == y.numpy()).sum())
            pgd_acc = pgd_correct / max(total, 1)
    square_acc, square_n = None, 0
    if square_queries > 0 and threat is not None:
        xs = torch.cat([x for x, _ in batches]).numpy()
        ys = torch.cat([y for _, y in batches]).numpy()
        if square_examples is not None:
            xs, ys = xs[:square_examples], ys[:square_examples]
        result = square_attack(session.predict, xs, ys, threat.eps, square_queries, square_p_init, seed)
        square_acc, square_n = result.accuracy, len(ys)
    return OnnxRobustness(
        session.provider, total, correct / max(total, 1), pgd_acc, square_acc, square_n, max_diff, agreement
    )
