"""L-inf projected gradient descent (Madry et al.) and FGSM on models that take inputs in [0, 1]."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robprune_deploy.errors import ArgumentError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ThreatModel:
    """An L-inf ball of radius ``eps`` around inputs in [0, 1], attacked with PGD.

    :param eps: radius of the ball.
    :param step_size: PGD step (``alpha``).
    :param steps: PGD iterations.
    :param random_start: start from a uniform point in the ball (Madry et al.).
    :param bf16: run the attack's forward/backward passes under bf16 autocast (CUDA only).
    """

    eps: float
    step_size: float
    steps: int
    random_start: bool = True
    bf16: bool = False

    def __post_init__(self) -> None:
        for name, high in (("eps", 1.0), ("step_size", 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) <= high:
                # NaN fails the comparison too: a NaN radius would make every attack a no-op
                raise ArgumentError(f"ThreatModel.{name}: must be a number in [0, {high:g}], got {value!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) or int(self.steps) < 0:
            raise ArgumentError(f"ThreatModel.steps: must be an integer >= 0, got {self.steps!r}")

    def with_steps(self, steps: int) -> ThreatModel:
        return ThreatModel(self.eps, self.step_size, steps, self.random_start, self.bf16)


def _autocast(x: torch.Tensor, enabled: bool) -> contextlib.AbstractContextManager[None]:
    if enabled and x.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """Adversarial examples that maximize ``loss_fn(model(x_adv), y)`` within the threat model.

    The model's parameters receive no gradient (``requires_grad`` is toggled off for the duration)
    and the model's mode is left as the caller set it. Iterates are kept in fp32 even under bf16
    autocast, so only the network's own arithmetic is reduced.

    :returns: a detached tensor in [0, 1] with ``|x_adv - x| <= eps`` element-wise.
    """
    loss_fn = loss_fn or (lambda logits, target: F.cross_entropy(logits, target))
    x = x.detach()
    if threat.eps == 0 or threat.steps == 0:
        return x.clone()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            # The ball intersected with [0, 1], once: clamping the projection to it is the same
            # selection as the textbook min(max(x', x - eps), x + eps).clamp(0, 1) (x is in [0, 1],
            # so the two intervals overlap), and each step then updates one buffer in place.
            low = (x - threat.eps).clamp_(0.0, 1.0)
            high = (x + threat.eps).clamp_(0.0, 1.0)
            if threat.random_start:
                x_adv = torch.empty_like(x).uniform_(-threat.eps, threat.eps).add_(x).clamp_(0.0, 1.0)
            else:
                x_adv = x.clone()
        for _ in range(threat.steps):
            # Only the input needs a gradient: a leaf view of the buffer, freed with the graph.
            leaf = x_adv.detach().requires_grad_(True)
            with _autocast(x, threat.bf16):
                loss = loss_fn(model(leaf).float(), y)
            (grad,) = torch.autograd.grad(loss, leaf)
            with torch.no_grad():
                x_adv.add_(grad.sign_(), alpha=threat.step_size)
                torch.maximum(x_adv, low, out=x_adv)
                torch.minimum(x_adv, high, out=x_adv)
    finally:
        for p in params:
            p.requires_grad_(True)
    return x_adv


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method: one step of size ``eps`` without random start."""
    return pgd(model, x, y, ThreatModel(eps=eps, step_size=eps, steps=1, random_start=False))
