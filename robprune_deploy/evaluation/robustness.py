"""Robust accuracy measured on the deployed ONNX model.

White-box attacks are crafted on a differentiable torch twin of the graph (the identical torch
model, or one converted from the ONNX file) and every adversarial input is classified by the
onnxruntime session of the shipped file. Black-box: the Square attack querying the session itself.
``attacks`` selects the protocol: ``pgd`` (PGD plus an independent Square run), ``autoattack-fast``
or ``autoattack`` (the ensembles of :mod:`robprune_deploy.evaluation.ensemble`; PGD is still run
on its own, for comparison). Optionally: the security curve (FMN) and the attack-failure indicators.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from robprune_deploy.arguments import check_batch_list
from robprune_deploy.attacks import ThreatModel, pgd
from robprune_deploy.errors import ArgumentError
from robprune_deploy.evaluation.ensemble import ENSEMBLES, EnsembleBudget, EnsembleResult, run_ensemble
from robprune_deploy.evaluation.indicators import Indicator, measure_indicators
from robprune_deploy.evaluation.parity import parity
from robprune_deploy.evaluation.security_curve import SecurityCurve, security_curve
from robprune_deploy.evaluation.sessions import OnnxClassifier
from robprune_deploy.evaluation.square import square_attack

ATTACK_PROTOCOLS = ("pgd", *ENSEMBLES)


@dataclass(frozen=True)
class OnnxRobustness:
    """Every robustness figure of one ONNX model on one fixed evaluation subset (fractions).

    ``member_acc`` maps each ensemble member to the robust accuracy after it and every member
    before it; ``autoattack_acc`` is the accuracy after the whole ensemble (the per-example worst
    case); ``whitebox_acc`` after its white-box members only. ``outcomes`` holds the per-example
    verdicts behind the accuracies, in the subset's order (``clean`` and ``pgd`` on every example,
    ``autoattack`` on the ones the ensemble attacked, the first ``square_examples``): paired tests
    between two models need them, not only their means.
    """

    provider: str
    examples: int
    clean_acc: float
    pgd_acc: float | None
    square_acc: float | None
    square_examples: int
    max_abs_diff: float | None
    argmax_agreement: float | None
    attacks: str = "pgd"
    autoattack_acc: float | None = None
    whitebox_acc: float | None = None
    member_acc: dict[str, float] = field(default_factory=dict)
    budget: str = ""
    members: list[dict[str, Any]] = field(default_factory=list)
    curve: SecurityCurve | None = None
    indicators: dict[str, Indicator] = field(default_factory=dict)
    eps: float | None = None
    outcomes: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def median_linf_distance(self) -> float | None:
        return self.curve.median_distance if self.curve is not None else None

    @property
    def curve_acc_at_eps(self) -> float | None:
        return self.curve.accuracy_at(self.eps) if self.curve is not None and self.eps is not None else None

    @property
    def fmn_acc_at_eps(self) -> float | None:
        """FMN's own accuracy at eps (the curve merges in the ensemble's points)."""
        return self.curve.fmn_accuracy_at(self.eps) if self.curve is not None and self.eps is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "examples": self.examples,
            "clean_acc": self.clean_acc,
            "pgd_acc": self.pgd_acc,
            "square_acc": self.square_acc,
            "square_examples": self.square_examples,
            "max_abs_diff": self.max_abs_diff,
            "argmax_agreement": self.argmax_agreement,
            "attacks": self.attacks,
            "autoattack_acc": self.autoattack_acc,
            "whitebox_acc": self.whitebox_acc,
            "member_acc": dict(self.member_acc),
            "budget": self.budget,
            "members": list(self.members),
            "median_linf_distance": self.median_linf_distance,
            "curve_acc_at_eps": self.curve_acc_at_eps,
            "fmn_acc_at_eps": self.fmn_acc_at_eps,
            "curve": self.curve.to_dict() if self.curve is not None else None,
            "indicators": {k: v.to_dict() for k, v in self.indicators.items()},
        }


def _adversarial_distances(x: np.ndarray, x_adv: np.ndarray, robust: np.ndarray, eps: float) -> np.ndarray:
    """L-inf distance of each broken example's adversarial input (``inf`` where the example survived).

    The ensemble projects onto the eps-ball, but in float32 a point on its surface measures a few
    ulps above eps (0.2 is 0.2000000030 in float32): capped at eps, as the projection guarantees."""
    distance = np.minimum(np.abs(x_adv - x).reshape(len(x), -1).max(1).astype(np.float64), eps)
    return np.where(robust, np.inf, distance)


def pgd_outcomes(
    model: nn.Module, session: OnnxClassifier, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], threat: ThreatModel
) -> np.ndarray:
    """Per example, in batch order: does the ONNX session still classify the PGD input crafted on
    ``model`` correctly? (Paired tests between two models need these, not only their mean.)"""
    device = next(iter(model.parameters()), torch.empty(0)).device
    outcomes = []
    for x, y in batches:
        x_adv = pgd(model, x.to(device), y.to(device), threat).cpu()
        outcomes.append(session.predict(x_adv.numpy()).argmax(1) == y.numpy())
    return np.concatenate(outcomes) if outcomes else np.zeros(0, dtype=bool)


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
    attacks: str = "pgd",
    budget: EnsembleBudget | None = None,
    curve_steps: int = 0,
    curve_examples: int | None = None,
    indicator_examples: int = 0,
    indicator_limits: Mapping[str, float] | None = None,
    batch_size: int = 256,
    show_progress: bool = False,
    ensemble_examples: int | None = None,
) -> OnnxRobustness:
    """Clean, white-box and black-box accuracy of the ONNX file at ``path`` under onnxruntime.

    :param batches: the (fixed) evaluation batches, inputs in [0, 1].
    :param torch_model: the differentiable twin: white-box attacks are crafted on it, parity is checked.
    :param threat: the threat model (eps; PGD steps and step size).
    :param square_queries: ``pgd`` protocol: Square's query budget (0 skips it) on the first
        ``square_examples`` examples. The ensembles take their budgets from ``budget``.
    :param attacks: ``pgd``, ``autoattack-fast`` or ``autoattack``.
    :param ensemble_examples: the ensembles attack the first this many examples (``None``: all),
        so that PGD can cover a whole test split while the far costlier ensemble takes a part of it.
    :param curve_steps: FMN steps for the security curve on the first ``curve_examples`` (0: no curve).
    :param indicator_examples: correctly classified examples the failure indicators are measured on
        (0: none).
    """
    if attacks not in ATTACK_PROTOCOLS:
        raise ArgumentError(f"evaluate_onnx: attacks must be one of {', '.join(ATTACK_PROTOCOLS)}, got {attacks!r}")
    batches = check_batch_list(batches, "evaluate_onnx")  # RobPruneError for empty or non-image data
    session = OnnxClassifier(path, providers)
    x = torch.cat([b[0] for b in batches]) if batches else torch.empty(0)
    y = torch.cat([b[1] for b in batches]) if batches else torch.empty(0, dtype=torch.long)
    clean = session.predict(x.numpy()).argmax(1) == y.numpy() if len(y) else np.zeros(0, dtype=bool)
    total = max(len(y), 1)
    outcomes = {"clean": clean}
    pgd_acc = max_diff = agreement = None
    twin = torch_model.eval().cpu() if torch_model is not None else None
    if twin is not None:
        check = parity(twin, session, batches)
        max_diff, agreement = check.max_abs_diff, check.argmax_agreement
        if threat is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                outcomes["pgd"] = pgd_outcomes(twin, session, batches, threat)
            pgd_acc = float(outcomes["pgd"].sum()) / total
    square_acc, square_n = None, 0
    ensemble: EnsembleResult | None = None
    if threat is not None and attacks == "pgd" and square_queries > 0:
        xs, ys = (x, y) if square_examples is None else (x[:square_examples], y[:square_examples])
        result = square_attack(session.predict, xs.numpy(), ys.numpy(), threat.eps, square_queries, square_p_init, seed)
        square_acc, square_n = result.accuracy, len(ys)
    elif threat is not None and attacks != "pgd" and twin is not None:
        attacked = len(y) if ensemble_examples is None else min(ensemble_examples, len(y))
        ensemble = run_ensemble(
            attacks,
            twin,
            session,
            x[:attacked],
            y[:attacked],
            threat.eps,
            budget=budget or EnsembleBudget.of(attacks),
            batch_size=batch_size,
            seed=seed,
            bf16=threat.bf16,
            show_progress=show_progress,
        )
        square_n = attacked
        outcomes["autoattack"] = ensemble.robust
    curve = None
    if twin is not None and curve_steps > 0 and len(y):
        n = len(y) if curve_examples is None else min(curve_examples, len(y))
        curve = security_curve(
            twin, session, x[:n], y[:n], steps=curve_steps, batch_size=batch_size, show_progress=show_progress
        )
        if ensemble is not None and threat is not None:
            # FMN alone can miss points the ensemble found; with them the curve at eps is the
            # ensemble's verdict on these examples (and FMN's own figure stays in fmn_distances).
            known = np.full(n, np.inf)  # no ensemble point for the examples it did not attack
            m = min(n, square_n)
            known[:m] = _adversarial_distances(x[:m].numpy(), ensemble.x_adv[:m], ensemble.robust[:m], threat.eps)
            curve = curve.merged(known)
    indicators: dict[str, Indicator] = {}
    if twin is not None and threat is not None and indicator_examples > 0:
        chosen = np.flatnonzero(clean)[:indicator_examples]
        if ensemble is not None:
            gain: float | None = ensemble.whitebox_accuracy - ensemble.accuracy
        else:
            gain = None if square_acc is None or pgd_acc is None else pgd_acc - square_acc
        indicators = measure_indicators(
            twin,
            session,
            x[chosen],
            y[chosen],
            threat.eps,
            blackbox_gain=gain,
            steps=(budget or EnsembleBudget()).apgd_steps,
            seed=seed,
            limits=dict(indicator_limits or {}),
            show_progress=show_progress,
        )
    if ensemble is not None:
        member_acc = {r.name: r.accuracy_after for r in ensemble.records}
        square_acc = member_acc.get("square")
        return OnnxRobustness(
            session.provider, len(y), float(clean.sum()) / total, pgd_acc, square_acc, square_n, max_diff, agreement,
            attacks, ensemble.accuracy, ensemble.whitebox_accuracy, member_acc,
            ensemble.description, [r.to_dict() for r in ensemble.records], curve, indicators,
            threat.eps if threat else None, outcomes,
        )  # fmt: skip
    return OnnxRobustness(
        session.provider, len(y), float(clean.sum()) / total, pgd_acc, square_acc, square_n, max_diff, agreement,
        attacks, curve=curve, indicators=indicators, eps=threat.eps if threat else None, outcomes=outcomes,
    )  # fmt: skip
