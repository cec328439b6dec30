"""Indicators of attack failure, measured on the shipped model.

Pintor et al., "Indicators of Attack Failure: Debugging and Improving Optimization of Adversarial
Examples" (NeurIPS 2022) list six symptoms that make a robust-accuracy number meaningless because
the attack, not the model, failed. Each is measured here on a fixed subset of correctly classified
examples, with the twin for gradients and onnxruntime for verdicts, and compared with a limit:

- ``silent_success``: the attack path crossed the decision boundary, yet the returned point is
  classified correctly (the attack returns the wrong iterate).
- ``unavailable_gradients``: the loss gradient w.r.t. the input is zero or not finite (or cannot be
  computed at all), for cross-entropy or DLR (the margin on 2-class models, which DLR needs 3
  classes for): gradient masking by saturation or non-differentiable layers.
- ``unstable_predictions``: the loss jumps under tiny random input noise (``radius = eps / 10``):
  shattered or stochastic gradients.
- ``incomplete_optimization``: the best loss was still rising over the attack's last steps.
- ``transfer_failure``: points adversarial on the twin are classified correctly by onnxruntime.
- ``unconstrained_attack_failure``: with the whole [0, 1] box allowed, APGD-CE must reach 0%.

and two of this project:

- ``non_monotone_curve``: robust accuracy must not rise with eps (APGD-CE at 0.5, 1, 2 and 4 eps,
  then unbounded; the largest rise between consecutive radii).
- ``blackbox_beats_whitebox``: the black-box attack must not find much that the white-box attacks
  missed (the ensemble's white-box accuracy minus its final accuracy; ``pgd``: PGD minus Square).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import get_args

import numpy as np
import torch
from torch import nn

from robprune_deploy.attacks.apgd import apgd
from robprune_deploy.attacks.losses import DLR_MIN_CLASSES, cross_entropy, dlr, margin, margin_loss
from robprune_deploy.attacks.outcome import AttackOutcome
from robprune_deploy.evaluation.runtimes import Predictor
from robprune_deploy.progress import progress_bar
from robprune_deploy.recipe.schema import IndicatorName

INDICATORS: tuple[str, ...] = get_args(IndicatorName)  # the recipe validates the same names
DEFAULT_LIMITS = {
    "silent_success": 0.0,
    "unavailable_gradients": 0.02,
    "unstable_predictions": 0.25,
    "incomplete_optimization": 0.2,
    "transfer_failure": 0.02,
    "unconstrained_attack_failure": 0.0,
    "non_monotone_curve": 0.03,
    "blackbox_beats_whitebox": 0.1,
}
"""An indicator fires when its value exceeds the limit (fractions of the measured examples, except
``unstable_predictions``: the mean relative loss change)."""
EPS_MULTIPLES = (0.5, 1.0, 2.0, 4.0)
UNBOUNDED = 1.0  # an L-inf radius of 1 spans the whole [0, 1] input box
INCOMPLETE_WINDOW, INCOMPLETE_RISE = 10, 0.05
NOISE_SAMPLES, NOISE_FRACTION = 16, 0.1


@dataclass(frozen=True)
class Indicator:
    name: str
    value: float | None
    limit: float
    examples: int
    detail: str

    @property
    def triggered(self) -> bool:
        """Not measured, not finite, or above the limit."""
        return self.value is None or not math.isfinite(self.value) or self.value > self.limit

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "triggered": self.triggered}


def _fraction(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else 0.0


def still_rising(trace: np.ndarray, window: int = INCOMPLETE_WINDOW, rise: float = INCOMPLETE_RISE) -> bool:
    """Whether a best-loss curve gained more than ``rise`` of its total range over its last ``window`` steps."""
    span = float(trace.max() - trace.min())
    if not math.isfinite(span) or span <= 0:
        return False
    tail = trace[-min(window, len(trace)) :]
    return float(tail.max() - tail.min()) / span > rise


def _scale_free_loss(classes: int) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], str]:
    """The loss that cannot saturate, and its name: DLR, or the margin below DLR's 3 classes."""
    if classes >= DLR_MIN_CLASSES:
        return dlr, "DLR"
    return margin_loss, f"margin (DLR needs >= {DLR_MIN_CLASSES} classes)"


def _gradient_unavailable(twin: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, str]:
    """Per example: the CE or DLR input gradient is all zeros or not finite (or cannot be computed).

    :returns: the flags and the name of the second loss (the margin stands in for DLR on 2 classes).
    """
    bad = np.zeros(len(y), dtype=bool)
    with torch.no_grad():
        classes = int(twin(x[:1]).shape[1]) if len(x) else DLR_MIN_CLASSES
    scale_free, name = _scale_free_loss(classes)
    for loss in (cross_entropy, scale_free):
        points = x.clone().requires_grad_(True)
        try:
            (grad,) = torch.autograd.grad(loss(twin(points), y).sum(), points)
        except RuntimeError:  # the graph is interrupted: no gradient at all
            return np.ones(len(y), dtype=bool), name
        flat = grad.flatten(1)
        bad |= (~torch.isfinite(flat).all(1) | (flat.abs().amax(1) == 0)).cpu().numpy()
    return bad, name


def _loss_instability(twin: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: float, seed: int) -> float:
    """Mean over examples and noise draws of ``|m(x + u) - m(x)| / |m(x)|`` (capped at 1), ``m`` the margin."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        reference = margin(twin(x), y)
        scale = reference.abs().clamp_min(1e-12)
        changes = []
        for _ in range(NOISE_SAMPLES):
            noise = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device) * radius
            moved = margin(twin((x + noise).clamp(0, 1)), y)
            changes.append(((moved - reference).abs() / scale).clamp_max(1.0))
    return float(torch.stack(changes).mean()) if changes else 0.0


def _apgd_on_session(
    twin: nn.Module, session: Predictor, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int
) -> tuple[AttackOutcome, np.ndarray]:
    outcome = apgd(twin, x, y, eps, steps=steps, generator=torch.Generator().manual_seed(seed))
    fooled = session.predict(outcome.x_adv.cpu().numpy()).argmax(1) != y.cpu().numpy()
    return outcome, fooled


def measure_indicators(
    twin: nn.Module,
    session: Predictor,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    blackbox_gain: float | None,
    steps: int = 100,
    seed: int = 0,
    limits: dict[str, float] | None = None,
    show_progress: bool = True,
) -> dict[str, Indicator]:
    """Every indicator on ``(x, y)``: CPU tensors of examples the session classifies correctly.

    :param blackbox_gain: the ensemble's white-box minus final robust accuracy (``None``: not measured).
    """
    limits = {**DEFAULT_LIMITS, **(limits or {})}
    device = next(iter(twin.parameters()), torch.empty(0)).device
    twin = twin.eval()
    xd, yd = x.to(device), y.to(device)
    n = len(y)
    values: dict[str, tuple[float | None, str]] = {}
    radii = [m * eps for m in EPS_MULTIPLES] + [UNBOUNDED]
    accuracies: list[float] = []
    at_eps: tuple[AttackOutcome, np.ndarray] | None = None
    with progress_bar("indicators", len(radii) + 2, show_progress) as bar:
        for radius in radii:
            outcome, fooled = _apgd_on_session(twin, session, xd, yd, radius, steps, seed)
            accuracies.append(1.0 - _fraction(fooled))
            if radius == eps:
                at_eps = (outcome, fooled)
            bar.advance()
        outcome, fooled = at_eps if at_eps is not None else _apgd_on_session(twin, session, xd, yd, eps, steps, seed)
        with torch.no_grad():
            returned_correct = (twin(outcome.x_adv).argmax(1) == yd).cpu().numpy()
        ever = outcome.ever_adversarial.cpu().numpy()
        twin_fooled = outcome.success.cpu().numpy()
        values["silent_success"] = (_fraction(ever & returned_correct), "APGD-CE at eps: path adversarial, result not")
        values["transfer_failure"] = (_fraction(twin_fooled & ~fooled), "APGD-CE at eps: twin fooled, onnxruntime not")
        survivors = np.flatnonzero(~fooled)
        rising = np.array([still_rising(outcome.loss_trace[:, i].cpu().numpy()) for i in survivors], dtype=bool)
        values["incomplete_optimization"] = (
            _fraction(rising),
            f"APGD-CE best loss still rising >{INCOMPLETE_RISE:.0%} of its range in the last "
            f"{INCOMPLETE_WINDOW} steps, of {len(survivors)} unbroken examples",
        )
        unavailable, second_loss = _gradient_unavailable(twin, xd, yd)
        values["unavailable_gradients"] = (
            _fraction(unavailable),
            f"CE or {second_loss} input gradient all zero or not finite",
        )
        bar.advance()
        values["unstable_predictions"] = (
            _loss_instability(twin, xd, yd, NOISE_FRACTION * eps, seed),
            f"mean relative margin change under uniform noise of radius {NOISE_FRACTION:g} eps",
        )
        bar.advance()
    rises = [later - earlier for earlier, later in itertools.pairwise(accuracies)]
    values["unconstrained_attack_failure"] = (accuracies[-1], "APGD-CE accuracy with the whole input box allowed")
    values["non_monotone_curve"] = (
        max([0.0, *rises]),
        "largest accuracy rise along APGD-CE at "
        + ", ".join(f"{r:.3g}: {a:.3f}" for r, a in zip(radii, accuracies, strict=True)),
    )
    values["blackbox_beats_whitebox"] = (blackbox_gain, "white-box accuracy minus accuracy after the black-box attack")
    return {name: Indicator(name, values[name][0], limits[name], n, values[name][1]) for name in INDICATORS}
