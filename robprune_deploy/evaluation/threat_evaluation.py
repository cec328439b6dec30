"""Robust accuracy under more threat models than the recipe's L-inf ball, and accuracy under common
corruptions: the figures behind ``evaluate.threats`` and ``evaluate.corruptions``.

Each threat (:class:`~robprune_deploy.attacks.threats.ThreatDescription`: a norm, a radius, its
attacks) is measured as the main threat's AutoAttack is (:mod:`robprune_deploy.evaluation.ensemble`):
white-box attacks (APGD-CE, APGD-T, FAB-T, FMN) are crafted on the artifact's torch twins, Square
queries the runtime itself, and only the runtime's classification of a point counts. A point counts
only when it lies within ``eps`` of its input in the threat's norm (measured here, not taken from
the attack), so an attack that strays outside the ball cannot lower the figure. Attacks run in the
threat's order on the examples still robust, so the accuracy after the last one is the per-example
worst case. With several twins (a quantized model's straight-through twin and its FP32 model) every
white-box attack runs from each, as PGD does. FMN runs on every example of the threat, whatever the
attacks before it broke, so that its median minimal distance describes the model, not the order.

Corruptions (Hendrycks & Dietterich 2019) are computed on the fly from the evaluation images and
classified by the runtime; the per-example outcomes are ``N x k`` over the ``k`` (type, severity)
cells, so a drop against a baseline is a paired difference of per-example means.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from robprune_deploy.attacks.apgd import apgd
from robprune_deploy.attacks.fab import fab_targeted
from robprune_deploy.attacks.fmn import fmn
from robprune_deploy.attacks.threats import ThreatDescription
from robprune_deploy.evaluation.corruptions import CorruptionAccuracy, corruption_accuracy
from robprune_deploy.evaluation.ensemble import EnsembleBudget, index_chunks, plan_member
from robprune_deploy.evaluation.runtimes import Predictor
from robprune_deploy.evaluation.security_curve import SecurityCurve
from robprune_deploy.evaluation.square import square_attack
from robprune_deploy.progress import progress_bar

WITHIN_EPS = 1e-5
"""Relative slack of the within-``eps`` check: a point projected onto the sphere measures a few
float32 ulps above ``eps``."""


@dataclass(frozen=True)
class ThreatPlan:
    """One threat of a protocol, attacked on the first ``examples`` of the subset (``None``: all)."""

    threat: ThreatDescription
    examples: int | None = None


@dataclass(frozen=True)
class CorruptionPlan:
    """The corruption cells of a protocol, on the first ``examples`` of the subset (``None``: all)."""

    types: tuple[str, ...]
    severities: tuple[int, ...]
    examples: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class AttackRecord:
    """One attack's part in a threat's verdict.

    :param attacked: examples still robust when it started (FMN: every example).
    :param broken: examples it broke, confirmed by the runtime and within ``eps``.
    :param outside: points the runtime misclassified that lie beyond ``eps``: not counted.
    """

    name: str
    attacked: int
    broken: int
    accuracy_after: float
    outside: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ThreatResult:
    """A threat's per-example verdict (``robust``: right on the clean input and not broken by any of
    its attacks) and, when FMN ran, each example's smallest adversarial distance the runtime
    confirmed (0: misclassified clean; ``inf``: none found). ``crafted_on`` names the twins the
    white-box attacks differentiated."""

    threat: ThreatDescription
    robust: np.ndarray
    records: tuple[AttackRecord, ...]
    distances: np.ndarray | None = None
    crafted_on: tuple[str, ...] = ()

    @property
    def examples(self) -> int:
        return int(self.robust.size)

    @property
    def accuracy(self) -> float:
        return float(self.robust.mean()) if self.robust.size else 0.0

    @property
    def median_distance(self) -> float | None:
        """FMN's median minimal distance in the threat's norm (``None`` when FMN did not run)."""
        if self.distances is None or not self.distances.size:
            return None
        return float(np.median(self.distances))

    def curve(self, points: int = 21) -> list[tuple[float, float]] | None:
        """The security curve in the threat's norm: ``(radius, accuracy)`` from 0 to twice ``eps``,
        read off FMN's runtime-confirmed distances (``None`` when FMN did not run)."""
        if self.distances is None or not self.distances.size:
            return None
        return SecurityCurve(self.distances, 0).grid(points, 2 * self.threat.eps)

    def to_dict(self) -> dict[str, Any]:
        curve = self.curve()
        return {
            **self.threat.to_dict(),
            "examples": self.examples,
            "accuracy": self.accuracy,
            "median_distance": self.median_distance,
            "curve": None if curve is None else [list(point) for point in curve],
            "crafted_on": list(self.crafted_on),
            "members": [r.to_dict() for r in self.records],
        }


def distances(x: np.ndarray, points: np.ndarray, norm: str) -> np.ndarray:
    """Per example, the distance of ``points`` from ``x`` in ``norm`` (float64)."""
    delta = (points.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
    return np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta**2).sum(1))


class _Verdict:
    """Who is still robust under one threat, on the runtime."""

    def __init__(
        self, threat: ThreatDescription, predictor: Predictor, x: torch.Tensor, y: torch.Tensor, batch_size: int
    ) -> None:
        self.threat, self.predictor = threat, predictor
        self.x, self.y = x, y
        self.inputs, self.labels = x.numpy(), y.numpy()
        predicted = [predictor.predict(self.inputs[c]).argmax(1) for c in index_chunks(np.arange(len(y)), batch_size)]
        self.robust = np.concatenate(predicted) == self.labels if predicted else np.zeros(0, dtype=bool)
        self.outside = 0

    def survivors(self) -> np.ndarray:
        return np.flatnonzero(self.robust)

    def confirm(self, idx: np.ndarray, points: np.ndarray) -> int:
        """Classify ``points`` (for examples ``idx``) on the runtime; those misclassified within
        ``eps`` break their example. Returns how many it broke."""
        if not len(idx):
            return 0
        eps = self.threat.eps
        inside = distances(self.inputs[idx], points, self.threat.norm) <= eps * (1 + WITHIN_EPS)
        fooled = self.predictor.predict(points.astype(np.float32)).argmax(1) != self.labels[idx]
        self.outside += int((fooled & ~inside).sum())
        broken = idx[fooled & inside & self.robust[idx]]
        self.robust[broken] = False
        return len(broken)


def _white_box(
    name: str, run: _Verdict, twin: nn.Module, budget: EnsembleBudget, batch_size: int, seed: int, bar: Any
) -> None:
    """APGD-CE, APGD-T or FAB-T of the threat's norm from ``twin``, on the survivors, chunk by chunk."""
    eps, norm = run.threat.eps, run.threat.norm
    device = next(iter(twin.parameters()), torch.empty(0)).device
    with torch.no_grad():  # target classes by clean likelihood
        parts = [twin(run.x[c].to(device)).float().cpu() for c in index_chunks(np.arange(len(run.y)), batch_size)]
    order = torch.cat(parts).argsort(1, descending=True)
    plan = plan_member(name, budget, int(order.shape[1]))
    for rank in range(plan.targets):
        for chunk in index_chunks(run.survivors(), batch_size):
            x, y = run.x[chunk].to(device), run.y[chunk].to(device)
            target = order[chunk, rank + 1].to(device)
            if name == "fab-t":  # a minimum-norm attack: its points beyond eps are no candidates
                outcome, reach = fab_targeted(
                    twin, x, y, target, steps=budget.fab_steps, norm=norm, on_step=bar.advance
                )
                points = _within(run, chunk, outcome.x_adv.detach().cpu().numpy(), reach.cpu().numpy())
            else:
                generator = torch.Generator().manual_seed(seed + 1000 * rank)
                outcome = apgd(
                    twin, x, y, eps, steps=budget.apgd_steps, loss=plan.loss or "ce",
                    target=None if name == "apgd-ce" else target, norm=norm, generator=generator,
                    on_step=bar.advance,
                )  # fmt: skip
                points = outcome.x_adv.detach().cpu().numpy()
            run.confirm(chunk, points)


def _fmn(run: _Verdict, twin: nn.Module, steps: int, batch_size: int, bar: Any) -> np.ndarray:
    """FMN from ``twin`` on every example: the runtime-confirmed minimal distances; the points
    within ``eps`` break their examples."""
    device = next(iter(twin.parameters()), torch.empty(0)).device
    found = np.full(len(run.labels), np.inf)
    for chunk in index_chunks(np.arange(len(run.labels)), batch_size):
        x, y = run.x[chunk].to(device), run.y[chunk].to(device)
        x_adv, _ = fmn(twin, x, y, norm=run.threat.norm, steps=steps, on_step=bar.advance)
        points = x_adv.detach().cpu().numpy()
        fooled = run.predictor.predict(points).argmax(1) != run.labels[chunk]
        reach = distances(run.inputs[chunk], points, run.threat.norm)
        found[chunk] = np.where(fooled, reach, np.inf)
        run.confirm(chunk, _within(run, chunk, points, reach))
    return found


def _within(run: _Verdict, idx: np.ndarray, points: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """A minimum-norm attack's ``points``, each replaced by its input where its distance ``reach``
    exceeds ``eps`` (a point it found farther away is no candidate, not an attack out of bounds)."""
    inside = reach <= run.threat.eps * (1 + WITHIN_EPS)
    return np.where(inside.reshape(-1, *[1] * (points.ndim - 1)), points, run.inputs[idx])


def evaluate_threat(
    plan: ThreatPlan,
    twins: Mapping[str, nn.Module],
    predictor: Predictor,
    x: torch.Tensor,
    y: torch.Tensor,
    budget: EnsembleBudget,
    *,
    fmn_steps: int = 100,
    batch_size: int = 256,
    seed: int = 0,
    show_progress: bool = False,
) -> ThreatResult:
    """The worst case per example over the threat's attacks on the first ``plan.examples`` of
    ``(x, y)`` (CPU tensors in [0, 1]), white-box attacks crafted on each of ``twins`` (eval mode).

    :param budget: steps, target classes and queries, as the main threat's ensemble has them.
    """
    threat = plan.threat
    n = len(y) if plan.examples is None else min(plan.examples, len(y))
    run = _Verdict(threat, predictor, x[:n], y[:n], batch_size)
    records: list[AttackRecord] = []
    found: np.ndarray | None = None
    for name in threat.attacks:
        start, before, outside = time.perf_counter(), int(run.robust.sum()), run.outside
        attacked = n if name == "fmn" else before
        label = f"{name} ({threat.label})"
        if name == "square":
            idx = run.survivors()
            with progress_bar(label, budget.square_queries, show_progress) as bar:
                if len(idx):
                    result = square_attack(
                        predictor.predict, run.inputs[idx], run.labels[idx], threat.eps, budget.square_queries,
                        budget.square_p_init, seed, on_step=bar.advance, norm=threat.norm,
                    )  # fmt: skip
                    run.confirm(idx, result.x_adv)
        elif name == "fmn":
            total = fmn_steps * len(twins) * len(index_chunks(np.arange(n), batch_size))
            with progress_bar(label, total, show_progress) as bar:
                for twin in twins.values():
                    own = _fmn(run, twin, fmn_steps, batch_size, bar)
                    found = own if found is None else np.minimum(found, own)
        else:
            with progress_bar(label, None, show_progress) as bar:
                for twin in twins.values():
                    _white_box(name, run, twin, budget, batch_size, seed, bar)
        after = int(run.robust.sum())
        records.append(
            AttackRecord(name, attacked, before - after, after / max(n, 1), run.outside - outside,
                         time.perf_counter() - start)
        )  # fmt: skip
    return ThreatResult(threat, run.robust, tuple(records), found, tuple(twins))


def evaluate_corruptions(
    plan: CorruptionPlan, predictor: Predictor, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256
) -> CorruptionAccuracy:
    """The runtime's accuracy on the first ``plan.examples`` of ``(x, y)`` under every cell of ``plan``."""
    n = len(y) if plan.examples is None else min(plan.examples, len(y))
    return corruption_accuracy(
        predictor.predict, x[:n], y[:n], plan.types, plan.severities, plan.seed, batch_size=batch_size
    )


def corruption_outcomes(result: CorruptionAccuracy) -> np.ndarray:
    """``N x k``: per example, right or not in each (type, severity) cell (the paired drop's input)."""
    cells = [result.correct[(t, s)] for t in result.types for s in result.severities]
    return np.stack(cells, axis=1) if cells else np.zeros((result.examples, 0), dtype=bool)


__all__ = [
    "AttackRecord",
    "CorruptionPlan",
    "ThreatPlan",
    "ThreatResult",
    "corruption_outcomes",
    "distances",
    "evaluate_corruptions",
    "evaluate_threat",
]
