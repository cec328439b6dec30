"""The release checks: each threshold of the recipe's ``gate`` section against measured figures."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from robprune_deploy.evaluation.indicators import DEFAULT_LIMITS
from robprune_deploy.recipe import GateSection


@dataclass(frozen=True)
class Measurements:
    """What the gate knows about one ONNX model (accuracies are fractions).

    :param latency_ms: median latency at the recipe's batch, for the speed-up check.
    :param audit_sparsity: zero fraction / channel reduction measured from the ONNX graph.
    :param claimed_sparsity: what the model's metadata (or the pipeline) claims for it.
    :param speedup: against the baseline: ``ratio``, the 95% interval ``low``-``high``, ``measurable``
        and the ``reason`` when not (see :class:`~robprune_deploy.evaluation.latency.Speedup`).
    :param indicators: the attack-failure indicators' values (``None``: not measured) and, in
        ``indicator_limits``, the limit each is held to.
    :param clean_acc_b1: clean accuracy with one image per batch, as a model is often served.
    """

    clean_acc: float
    pgd_acc: float
    square_acc: float | None = None
    autoattack_acc: float | None = None
    max_abs_diff: float | None = None
    latency_ms: float | None = None
    audit_sparsity: float | None = None
    claimed_sparsity: float | None = None
    speedup: dict[str, Any] | None = None
    indicators: dict[str, float | None] = field(default_factory=dict)
    indicator_limits: dict[str, float] = field(default_factory=dict)
    median_linf_distance: float | None = None
    clean_acc_b1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckResult:
    """One line of the verdict: ``measured <op> threshold``.

    :param measurable: False for a check whose figure this machine cannot measure reliably (a
        speed-up lost in timing noise): it neither passes nor fails the gate, and says why in ``detail``.
    """

    name: str
    measured: float | None
    threshold: float
    op: str
    passed: bool
    detail: str = ""
    measurable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _at_least(name: str, measured: float | None, threshold: float, detail: str = "") -> CheckResult:
    ok = measured is not None and math.isfinite(measured) and measured >= threshold
    return CheckResult(name, measured, threshold, ">=", ok, detail if measured is not None else "not measured")


def _at_most(name: str, measured: float | None, threshold: float, detail: str = "") -> CheckResult:
    ok = measured is not None and math.isfinite(measured) and measured <= threshold
    return CheckResult(name, measured, threshold, "<=", ok, detail if measured is not None else "not measured")


def _speedup_check(speedup: dict[str, Any] | None, threshold: float) -> CheckResult:
    """The lower end of the speed-up's 95% interval against ``threshold``; not measurable on noise."""
    if speedup is None:
        return CheckResult("min_speedup", None, threshold, ">=", False, "no baseline: set gate.baseline")
    if not speedup["measurable"]:
        return CheckResult("min_speedup", None, threshold, ">=", True, f"not measurable: {speedup['reason']}", False)
    detail = f"95% lower bound of x{speedup['ratio']:.2f} [{speedup['low']:.2f}-{speedup['high']:.2f}]"
    return _at_least("min_speedup", speedup["low"], threshold, detail)


def _drop(candidate: float | None, baseline: float | None) -> float | None:
    return None if candidate is None or baseline is None else baseline - candidate


def run_checks(gate: GateSection, candidate: Measurements, baseline: Measurements | None) -> list[CheckResult]:
    """Every configured check, in a fixed order. A check whose input was not measured fails:
    a gate never passes on a figure it did not see.
    """
    checks: list[CheckResult] = []
    if gate.min_clean_acc is not None:
        checks.append(_at_least("min_clean_acc", candidate.clean_acc, gate.min_clean_acc))
    if gate.min_pgd_acc is not None:
        checks.append(_at_least("min_pgd_acc", candidate.pgd_acc, gate.min_pgd_acc, "white-box PGD, classified by ORT"))
    if gate.min_square_acc is not None:
        checks.append(_at_least("min_square_acc", candidate.square_acc, gate.min_square_acc, "black-box Square on ORT"))
    if gate.min_autoattack_acc is not None:
        checks.append(
            _at_least(
                "min_autoattack_acc", candidate.autoattack_acc, gate.min_autoattack_acc, "worst case over AutoAttack"
            )
        )
    base = baseline
    for name, threshold, attribute in (
        ("max_clean_drop", gate.max_clean_drop, "clean_acc"),
        ("max_pgd_drop", gate.max_pgd_drop, "pgd_acc"),
        ("max_square_drop", gate.max_square_drop, "square_acc"),
        ("max_autoattack_drop", gate.max_autoattack_drop, "autoattack_acc"),
    ):
        if threshold is None:
            continue
        if base is None:
            checks.append(CheckResult(name, None, threshold, "<=", False, "no baseline: set gate.baseline"))
            continue
        measured = _drop(getattr(candidate, attribute), getattr(base, attribute))
        checks.append(_at_most(name, measured, threshold, "baseline minus candidate"))
    if gate.max_parity_error is not None:
        parity = candidate.max_abs_diff
        checks.append(_at_most("max_parity_error", parity, gate.max_parity_error, "torch vs ORT logits"))
    if gate.min_speedup is not None:
        checks.append(_speedup_check(candidate.speedup, gate.min_speedup))
    if gate.sparsity_tolerance is not None and candidate.claimed_sparsity is not None:
        gap = None if candidate.audit_sparsity is None else abs(candidate.audit_sparsity - candidate.claimed_sparsity)
        checks.append(_at_most("sparsity_audit", gap, gate.sparsity_tolerance, "|ONNX audit - claimed sparsity|"))
    for name in gate.indicators:
        # An enforced indicator that was not measured fails: the gate cannot vouch for the attacks.
        limit = candidate.indicator_limits.get(name, gate.indicator_limits.get(name, DEFAULT_LIMITS[name]))
        checks.append(_at_most(f"indicator:{name}", candidate.indicators.get(name), limit, "attack-failure indicator"))
    return checks


INT8_THRESHOLDS = ("max_clean_drop", "max_pgd_drop", "max_square_drop", "max_parity_error", "min_speedup")
"""Checks whose threshold an INT8 candidate takes from ``gate.int8`` (against its FP32 model)."""


AUTOATTACK_CHECKS = ("min_autoattack_acc", "max_autoattack_drop")
INT8_AUTOATTACK = (
    "not measured: an INT8 model is attacked with PGD (straight-through and transferred from FP32, worst case "
    "per example) and Square, not AutoAttack; set gate.min_autoattack_acc and gate.max_autoattack_drop to null "
    "for its gate, and hold its FP32 model to them"
)


def run_int8_checks(
    gate: GateSection, candidate: Measurements, fp32: Measurements | None, agreement: float | None
) -> list[CheckResult]:
    """The checks of an INT8 candidate: ``gate.min_*``, the sparsity audit and the indicators as for
    any model; drops, parity and speed-up against its FP32 model under ``gate.int8``'s thresholds
    (named ``int8.<check>``), and the INT8 vs FP32 argmax agreement.

    AutoAttack is not run on an INT8 model: through its straight-through twin alone, rounding can
    mask gradients and overstate its robustness, and the per-example worst case with PGD transferred
    from FP32 is what the gate trusts (``pgd_acc``). An enforced AutoAttack threshold therefore fails
    as not measured, never silently dropped."""
    int8 = gate.int8
    view = gate.model_copy(update={name: getattr(int8, name) for name in INT8_THRESHOLDS})
    checks = []
    for c in run_checks(view, candidate, fp32):
        if c.name in INT8_THRESHOLDS:
            c = replace(c, name=f"int8.{c.name}")
        elif c.name in AUTOATTACK_CHECKS:
            c = replace(c, measured=None, passed=False, detail=INT8_AUTOATTACK)
        checks.append(c)
    if int8.min_agreement is not None:
        checks.append(_at_least("int8.min_agreement", agreement, int8.min_agreement, "INT8 vs FP32 argmax, clean"))
    return checks
