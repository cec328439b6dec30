"""Robust accuracy of any deployable artifact, measured one way: :func:`evaluate_artifact`.

White-box attacks are crafted on differentiable torch twins (:mod:`robprune_deploy.evaluation.twin`)
and every adversarial input is classified by the artifact's runtime (onnxruntime, OpenVINO, ...).
Black-box: the Square attack querying the runtime itself. The protocol
(:class:`~robprune_deploy.evaluation.protocol.EvaluationProtocol`) selects ``pgd`` (PGD plus an
independent Square run), ``autoattack-fast`` or ``autoattack`` (the ensembles of
:mod:`robprune_deploy.evaluation.ensemble`; PGD is still run on its own, for comparison), and
optionally the security curve (FMN) and the attack-failure indicators.

PGD runs from every twin given, and an example counts as robust only when it survives all of them
(the worst case per example): a quantized model's straight-through twin can mask gradients, so PGD
transferred from its FP32 model runs beside it.
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
from robprune_deploy.evaluation.corruptions import CorruptionAccuracy
from robprune_deploy.evaluation.ensemble import EnsembleBudget, EnsembleResult, run_ensemble
from robprune_deploy.evaluation.indicators import Indicator, measure_indicators
from robprune_deploy.evaluation.parity import parity
from robprune_deploy.evaluation.protocol import EvaluationProtocol
from robprune_deploy.evaluation.runtimes import DEFAULT_RUNTIME, Artifact, Predictor
from robprune_deploy.evaluation.security_curve import SecurityCurve, security_curve
from robprune_deploy.evaluation.square import square_attack
from robprune_deploy.evaluation.threat_evaluation import (
    ThreatResult,
    corruption_outcomes,
    evaluate_corruptions,
    evaluate_threat,
)

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Robustness:
    """Every robustness figure of one artifact on one fixed evaluation subset (fractions).

    ``member_acc`` maps each ensemble member to the robust accuracy after it and every member
    before it; ``autoattack_acc`` is the accuracy after the whole ensemble (the per-example worst
    case); ``whitebox_acc`` after its white-box members only. ``pgd_acc`` is the per-example worst
    case over the PGD of every twin, ``pgd_sources`` each twin's PGD alone (recorded when there are
    several). ``max_abs_diff`` and ``argmax_agreement`` compare the artifact's own twin with its
    runtime; ``agreement`` is its argmax agreement with a reference artifact on clean inputs.
    ``outcomes`` holds the per-example verdicts behind the accuracies, in the subset's order
    (``clean`` and ``pgd`` on every example, ``autoattack`` on the ones the ensemble attacked, the
    first ``square_examples``): paired tests between two models need them, not only their means
    (kept in ``outcomes.json`` by :mod:`robprune_deploy.evaluation.outcome_files`).
    ``threats`` holds each extra threat's verdict by label (outcomes ``threat:<label>``) and
    ``corruptions`` the common-corruption cells (outcomes ``corruption_acc``, ``N x k``).
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
    runtime: str = DEFAULT_RUNTIME
    precision: str = "fp32"
    pgd_sources: dict[str, float] = field(default_factory=dict)
    agreement: float | None = None
    outcomes: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    threats: dict[str, ThreatResult] = field(default_factory=dict, repr=False, compare=False)
    corruptions: CorruptionAccuracy | None = field(default=None, repr=False, compare=False)

    @property
    def threat_acc(self) -> dict[str, float]:
        """Accuracy under each extra threat, by label."""
        return {label: result.accuracy for label, result in self.threats.items()}

    @property
    def corruption_acc(self) -> float | None:
        """The mean corruption accuracy (``None``: not measured)."""
        return self.corruptions.mean_accuracy if self.corruptions is not None else None

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
            "runtime": self.runtime,
            "precision": self.precision,
            "provider": self.provider,
            "examples": self.examples,
            "clean_acc": self.clean_acc,
            "pgd_acc": self.pgd_acc,
            "pgd_sources": dict(self.pgd_sources),
            "square_acc": self.square_acc,
            "square_examples": self.square_examples,
            "max_abs_diff": self.max_abs_diff,
            "argmax_agreement": self.argmax_agreement,
            "agreement": self.agreement,
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
            "eps": self.eps,
            "threats": {label: result.to_dict() for label, result in self.threats.items()},
            "corruption_acc": self.corruption_acc,
            "corruptions": self.corruptions.to_dict() if self.corruptions is not None else None,
        }


OnnxRobustness = Robustness
"""The former name, kept for the Python API."""


def _adversarial_distances(x: np.ndarray, x_adv: np.ndarray, robust: np.ndarray, eps: float) -> np.ndarray:
    """L-inf distance of each broken example's adversarial input (``inf`` where the example survived).

    The ensemble projects onto the eps-ball, but in float32 a point on its surface measures a few
    ulps above eps (0.2 is 0.2000000030 in float32): capped at eps, as the projection guarantees."""
    distance = np.minimum(np.abs(x_adv - x).reshape(len(x), -1).max(1).astype(np.float64), eps)
    return np.where(robust, np.inf, distance)


def pgd_outcomes(model: nn.Module, session: Predictor, batches: Batches, threat: ThreatModel) -> np.ndarray:
    """Per example, in batch order: does the runtime still classify the PGD input crafted on
    ``model`` correctly? (Paired tests between two models need these, not only their mean.)"""
    device = next(iter(model.parameters()), torch.empty(0)).device
    outcomes = []
    for x, y in batches:
        x_adv = pgd(model, x.to(device), y.to(device), threat).cpu()
        outcomes.append(session.predict(x_adv.numpy()).argmax(1) == y.numpy())
    return np.concatenate(outcomes) if outcomes else np.zeros(0, dtype=bool)


def _worst_case_pgd(
    twins: Mapping[str, nn.Module], predictor: Predictor, batches: Batches, threat: ThreatModel, seed: int
) -> tuple[np.ndarray, dict[str, float]]:
    """Per example: robust to the PGD of every twin (each seeded alike); and each twin's accuracy."""
    alone: dict[str, np.ndarray] = {}
    with torch.random.fork_rng(devices=[]):
        for name, twin in twins.items():
            torch.manual_seed(seed)
            alone[name] = pgd_outcomes(twin, predictor, batches, threat)
    robust = np.logical_and.reduce(list(alone.values()))
    return robust, {name: float(mask.mean()) if len(mask) else 0.0 for name, mask in alone.items()}


@dataclass
class _Measured:
    """What :func:`evaluate_artifact` has measured so far, step by step."""

    x: torch.Tensor
    y: torch.Tensor
    clean: np.ndarray
    figures: dict[str, Any] = field(default_factory=dict)
    ensemble: EnsembleResult | None = None
    outcomes: dict[str, np.ndarray] = field(default_factory=dict)


def _white_box(
    m: _Measured, twins: Mapping[str, nn.Module], predictor: Predictor, batches: Batches, p: EvaluationProtocol
) -> None:
    """Parity with the artifact's own twin, and PGD from every twin (worst case per example)."""
    twin = next(iter(twins.values()))
    check = parity(twin, predictor, batches)
    m.figures.update(max_abs_diff=check.max_abs_diff, argmax_agreement=check.argmax_agreement)
    if p.threat is not None:
        robust, alone = _worst_case_pgd(twins, predictor, batches, p.threat, p.seed)
        m.outcomes["pgd"] = robust
        m.figures.update(pgd_acc=float(robust.sum()) / max(len(m.y), 1), pgd_sources=alone if len(alone) > 1 else {})


def _black_box_or_ensemble(
    m: _Measured, twin: nn.Module | None, predictor: Predictor, p: EvaluationProtocol, show_progress: bool
) -> None:
    """The PGD protocol's independent Square run, or the ensemble (AutoAttack) on the twin."""
    threat = p.threat
    if threat is not None and not p.ensemble and p.square_queries > 0:
        n = len(m.y) if p.square_examples is None else min(p.square_examples, len(m.y))
        x, y = m.x[:n].numpy(), m.y[:n].numpy()
        result = square_attack(predictor.predict, x, y, threat.eps, p.square_queries, p.square_p_init, p.seed)
        m.outcomes["square"] = result.robust
        m.figures.update(square_acc=result.accuracy, square_examples=n)
    elif threat is not None and p.ensemble and twin is not None:
        n = len(m.y) if p.ensemble_examples is None else min(p.ensemble_examples, len(m.y))
        m.ensemble = ensemble = run_ensemble(
            p.attacks, twin, predictor, m.x[:n], m.y[:n], threat.eps, budget=p.budget, batch_size=p.batch_size,
            seed=p.seed, bf16=threat.bf16, show_progress=show_progress,
        )  # fmt: skip
        m.outcomes["autoattack"] = ensemble.robust
        member_acc = {r.name: r.accuracy_after for r in ensemble.records}
        m.figures.update(
            square_acc=member_acc.get("square"), square_examples=n, autoattack_acc=ensemble.accuracy,
            whitebox_acc=ensemble.whitebox_accuracy, member_acc=member_acc, budget=ensemble.description,
            members=[r.to_dict() for r in ensemble.records],
        )  # fmt: skip


def _curve(m: _Measured, twin: nn.Module, predictor: Predictor, p: EvaluationProtocol, show_progress: bool) -> None:
    """The FMN security curve, merged with the ensemble's points."""
    n = len(m.y) if p.curve_examples is None else min(p.curve_examples, len(m.y))
    curve = security_curve(
        twin, predictor, m.x[:n], m.y[:n], steps=p.curve_steps, batch_size=p.batch_size, show_progress=show_progress
    )
    if m.ensemble is not None and p.threat is not None:
        # FMN alone can miss points the ensemble found; with them the curve at eps is the
        # ensemble's verdict on these examples (and FMN's own figure stays in fmn_distances).
        # no ensemble point for the examples it did not attack (evaluate.ensemble_examples)
        known = np.full(n, np.inf)
        k = min(n, len(m.ensemble.robust))
        known[:k] = _adversarial_distances(m.x[:k].numpy(), m.ensemble.x_adv[:k], m.ensemble.robust[:k], p.threat.eps)
        curve = curve.merged(known)
    m.figures["curve"] = curve


def _indicators(
    m: _Measured, twin: nn.Module, predictor: Predictor, p: EvaluationProtocol, show_progress: bool
) -> None:
    """The attack-failure indicators on correctly classified examples."""
    assert p.threat is not None
    chosen = np.flatnonzero(m.clean)[: p.indicator_examples]
    if m.ensemble is not None:
        gain: float | None = m.ensemble.whitebox_accuracy - m.ensemble.accuracy
    else:
        pgd_acc, square_acc = m.figures.get("pgd_acc"), m.figures.get("square_acc")
        gain = None if square_acc is None or pgd_acc is None else pgd_acc - square_acc
    m.figures["indicators"] = measure_indicators(
        twin, predictor, m.x[chosen], m.y[chosen], p.threat.eps, blackbox_gain=gain, steps=p.budget.apgd_steps,
        seed=p.seed, limits=dict(p.indicator_limits), show_progress=show_progress,
    )  # fmt: skip


def _threats(
    m: _Measured, twins: Mapping[str, nn.Module], predictor: Predictor, p: EvaluationProtocol, show_progress: bool
) -> None:
    """Each extra threat, its white-box attacks crafted on every twin (worst case per example)."""
    results = {}
    for plan in p.threats:
        result = evaluate_threat(
            plan, twins, predictor, m.x, m.y, p.budget, fmn_steps=p.curve_steps or p.budget.apgd_steps,
            batch_size=p.batch_size, seed=p.seed, show_progress=show_progress,
        )  # fmt: skip
        results[plan.threat.label] = result
        m.outcomes[f"threat:{plan.threat.label}"] = result.robust
    m.figures["threats"] = results


def evaluate_artifact(
    artifact: Artifact,
    protocol: EvaluationProtocol,
    batches: Batches,
    *,
    twins: Mapping[str, nn.Module] | None = None,
    reference: Artifact | None = None,
    show_progress: bool = False,
) -> Robustness:
    """Clean, white-box and black-box accuracy of ``artifact`` under its runtime, by ``protocol``.

    :param batches: the (fixed) evaluation batches, inputs in [0, 1].
    :param twins: differentiable torch models white-box attacks are crafted on, by name. The first
        is the artifact's own twin: parity is checked against it and the ensemble, the security
        curve and the indicators use it. PGD and the white-box attacks of ``protocol.threats`` run
        from each (worst case per example). None: no white-box attack (clean accuracy, Square and
        the corruptions only; the extra threats are then not measured).
    :param reference: an artifact whose clean predictions ``agreement`` compares with.
    """
    batches = check_batch_list(batches, "evaluate_artifact")  # RobPruneError for empty or non-image data
    predictor = artifact.open()
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    logits = predictor.predict(x.numpy())
    m = _Measured(x, y, logits.argmax(1) == y.numpy())
    m.outcomes["clean"] = m.clean
    if reference is not None:
        m.figures["agreement"] = float((logits.argmax(1) == reference.open().predict(x.numpy()).argmax(1)).mean())
    sources = {name: twin.eval().cpu() for name, twin in (twins or {}).items()}
    twin = next(iter(sources.values()), None)
    if twin is not None:
        _white_box(m, sources, predictor, batches, protocol)
    _black_box_or_ensemble(m, twin, predictor, protocol, show_progress)
    if twin is not None and protocol.curve_steps > 0:
        _curve(m, twin, predictor, protocol, show_progress)
    if twin is not None and protocol.threat is not None and protocol.indicator_examples > 0:
        _indicators(m, twin, predictor, protocol, show_progress)
    if protocol.threats and sources:
        _threats(m, sources, predictor, protocol, show_progress)
    if protocol.corruptions is not None:
        m.figures["corruptions"] = result = evaluate_corruptions(
            protocol.corruptions, predictor, x, y, batch_size=protocol.batch_size
        )
        m.outcomes["corruption_acc"] = corruption_outcomes(result)
    figures: dict[str, Any] = {"pgd_acc": None, "square_acc": None, "square_examples": 0, "max_abs_diff": None}
    figures.update(m.figures)
    return Robustness(
        provider=predictor.provider, examples=len(y), clean_acc=float(m.clean.sum()) / max(len(y), 1),
        argmax_agreement=figures.pop("argmax_agreement", None), attacks=protocol.attacks, runtime=artifact.runtime,
        precision=artifact.precision, eps=protocol.threat.eps if protocol.threat else None, outcomes=m.outcomes,
        **figures,
    )  # fmt: skip


def evaluate_onnx(
    path: str | os.PathLike[str],
    batches: Batches,
    *,
    torch_model: nn.Module | None = None,
    threat: ThreatModel | None = None,
    providers: Sequence[str] = ("cuda", "cpu"),
    square_queries: int = 0,
    square_p_init: float = 0.8,
    square_examples: int | None = None,
    ensemble_examples: int | None = None,
    seed: int = 0,
    attacks: str = "pgd",
    budget: EnsembleBudget | None = None,
    curve_steps: int = 0,
    curve_examples: int | None = None,
    indicator_examples: int = 0,
    indicator_limits: Mapping[str, float] | None = None,
    batch_size: int = 256,
    runtime: str = DEFAULT_RUNTIME,
    show_progress: bool = False,
) -> Robustness:
    """:func:`evaluate_artifact` of the FP32 ONNX file at ``path`` (the Python API's short form).

    :param torch_model: the differentiable twin: white-box attacks are crafted on it, parity is checked.
    :param attacks: ``pgd``, ``autoattack-fast`` or ``autoattack``; the other parameters are those of
        :class:`~robprune_deploy.evaluation.protocol.EvaluationProtocol`.
    :param runtime: a registered runtime (``onnxruntime``, ``openvino``).
    """
    protocol = EvaluationProtocol(
        threat, attacks, budget or (EnsembleBudget.of(attacks) if attacks != "pgd" else EnsembleBudget()),
        square_queries, square_p_init, square_examples, ensemble_examples, seed, curve_steps, curve_examples,
        indicator_examples, dict(indicator_limits or {}), batch_size,
    )  # fmt: skip
    batches = check_batch_list(batches, "evaluate_onnx")
    twins = {"twin": torch_model} if torch_model is not None else None
    artifact = Artifact.of(path, "fp32", runtime, providers)
    return evaluate_artifact(artifact, protocol, batches, twins=twins, show_progress=show_progress)
