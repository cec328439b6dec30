"""The release checks: a table of (name, measured figure, comparison, threshold, reference) applied
to the measurements of any artifact.

:func:`check_table` reads the table off the recipe's ``gate`` section for a declared precision; what
differs between precisions is only which thresholds apply (an INT8 model takes its drops, parity
and speed-up thresholds from ``gate.int8``, named ``int8.<check>``, and adds ``int8.min_agreement``)
and which reference the drops compare with (the dense baseline, or the FP32 model an INT8 one was
quantized from: the caller's choice). :func:`apply_checks` applies a table to one candidate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from robprune_deploy.evaluation.indicators import DEFAULT_LIMITS
from robprune_deploy.gate.drop_rule import DropRule, PairedDrop, decide, describe, paired_drop
from robprune_deploy.recipe import GateSection

ON_REQUEST_FIGURES = ("corruption_acc",)
"""Figures in :attr:`Measurements.figures` only when the recipe asked for them (``threat:<label>`` too)."""


@dataclass(frozen=True)
class Measurements:
    """What the gate knows about one artifact (accuracies are fractions).

    :param latency_ms: median latency at the recipe's batch, for the speed-up check.
    :param audit_sparsity: zero fraction / channel reduction measured from the ONNX graph.
    :param claimed_sparsity: what the model's metadata (or the pipeline) claims for it.
    :param speedup: against the baseline: ``ratio``, the 95% interval ``low``-``high``, ``measurable``
        and the ``reason`` when not (see :class:`~robprune_deploy.evaluation.latency.Speedup`).
    :param indicators: the attack-failure indicators' values (``None``: not measured) and, in
        ``indicator_limits``, the limit each is held to.
    :param clean_acc_b1: clean accuracy with one image per batch, as a model is often served.
    :param agreement: argmax agreement with the reference artifact on clean inputs.
    :param figures: named figures beyond the fields (``threat:<label>``, ``corruption_acc``).
    :param outcomes: per figure name, the per-example outcomes behind it (``N`` booleans, or ``N x k``
        for a figure averaged over ``k`` cells per example), in the evaluation subset's order: a drop
        against a baseline measured on the same examples is decided on the pairs
        (:mod:`robprune_deploy.gate.drop_rule`).
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
    agreement: float | None = None
    figures: dict[str, float | None] = field(default_factory=dict)
    outcomes: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def sparsity_gap(self) -> float | None:
        """``|audit - claimed|`` sparsity."""
        if self.audit_sparsity is None or self.claimed_sparsity is None:
            return None
        return abs(self.audit_sparsity - self.claimed_sparsity)

    def figure(self, name: str) -> Any:
        """A measured figure by name; ``indicator:<name>`` reads an indicator. A figure the protocol
        measures only on request (``threat:<label>``, ``corruption_acc``) is ``None`` when it was not
        measured; any other name is a mistake in the check table and raises ``KeyError``."""
        if name.startswith("indicator:"):
            return self.indicators.get(name.split(":", 1)[1])
        if name in self.figures:
            return self.figures[name]
        if name.startswith("threat:") or name in ON_REQUEST_FIGURES:
            return None
        if name == "sparsity_gap" or name in {f.name for f in fields(self)}:
            return getattr(self, name)
        raise KeyError(f"the gate measures no figure named {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The figures, with the number of per-example outcomes behind each (not the outcomes)."""
        data = asdict(self)
        data["outcomes"] = {name: int(np.asarray(values).shape[0]) for name, values in self.outcomes.items()}
        return data


@dataclass(frozen=True)
class CheckResult:
    """One line of the verdict: ``measured <op> threshold``.

    :param measurable: False for a check whose figure this machine cannot measure reliably (a
        speed-up lost in timing noise): it neither passes nor fails the gate, and says why in ``detail``.
    :param interval: a drop's paired interval ``[low, high]`` (:mod:`robprune_deploy.gate.drop_rule`),
        with its ``p_value`` and the paired ``examples`` behind it.
    :param inconclusive: failed because the interval straddles the threshold (``gate.drop_rule:
        upper_bound``); ``examples_needed`` says about how many examples would decide it.
    """

    name: str
    measured: float | None
    threshold: float
    op: str
    passed: bool
    detail: str = ""
    measurable: bool = True
    interval: tuple[float, float] | None = None
    p_value: float | None = None
    examples: int | None = None
    inconclusive: bool = False
    examples_needed: int | None = None

    @property
    def status(self) -> str:
        """``pass``, ``fail``, ``inconclusive`` or ``not measurable``."""
        if not self.measurable:
            return "not measurable"
        return "pass" if self.passed else ("inconclusive" if self.inconclusive else "fail")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["interval"] = list(self.interval) if self.interval is not None else None
        data["status"] = self.status
        return data


@dataclass(frozen=True)
class Check:
    """One row of the table: ``figure`` of the candidate (or, with ``reference``, the reference's
    figure minus the candidate's: a drop) compared with ``threshold`` by ``op``.

    :param figure: a :class:`Measurements` field, ``sparsity_gap``, ``speedup`` (the lower end of its
        95% interval) or ``indicator:<name>``.
    :param unmeasured: the detail of a check whose figure was not measured (it fails).
    :param rule: how a drop is decided (``gate.drop_rule``; see :mod:`robprune_deploy.gate.drop_rule`).
    """

    name: str
    figure: str
    op: str
    threshold: float
    reference: bool = False
    detail: str = ""
    unmeasured: str = "not measured"
    rule: DropRule = "point"


NO_BASELINE = "no baseline: set gate.baseline"
INT8_THRESHOLDS = ("max_clean_drop", "max_pgd_drop", "max_square_drop", "max_parity_error", "min_speedup")
"""Checks whose threshold an INT8 candidate takes from ``gate.int8`` (against its FP32 model)."""
INT8_AUTOATTACK = (
    "not measured: an INT8 model is attacked with PGD (straight-through and transferred from FP32, worst case "
    "per example) and Square, not AutoAttack; set gate.min_autoattack_acc and gate.max_autoattack_drop to null "
    "for its gate, and hold its FP32 model to them"
)
NOT_MEASURED: dict[str, dict[str, str]] = {"int8": {"autoattack_acc": INT8_AUTOATTACK}}
"""Per precision, the figures its evaluation protocol leaves out, and why (see
:func:`robprune_deploy.gate.measure.protocol_of`): an enforced check on one fails, saying so."""

# (check, figure, op, reference, detail): the order of the verdict. Each check's threshold is the
# gate section's field of the same name; None leaves the check out.
_ROWS: tuple[tuple[str, str, str, bool, str], ...] = (
    ("min_clean_acc", "clean_acc", ">=", False, ""),
    ("min_pgd_acc", "pgd_acc", ">=", False, "white-box PGD, classified by the runtime"),
    ("min_square_acc", "square_acc", ">=", False, "black-box Square on the runtime"),
    ("min_autoattack_acc", "autoattack_acc", ">=", False, "worst case over AutoAttack"),
    ("max_clean_drop", "clean_acc", "<=", True, "baseline minus candidate"),
    ("max_pgd_drop", "pgd_acc", "<=", True, "baseline minus candidate"),
    ("max_square_drop", "square_acc", "<=", True, "baseline minus candidate"),
    ("max_autoattack_drop", "autoattack_acc", "<=", True, "baseline minus candidate"),
    ("max_parity_error", "max_abs_diff", "<=", False, "torch twin vs runtime logits"),
    ("min_speedup", "speedup", ">=", False, ""),
    ("sparsity_audit", "sparsity_gap", "<=", False, "|ONNX audit - claimed sparsity|"),
)
_THRESHOLD_FIELD = {"sparsity_audit": "sparsity_tolerance"}


def indicator_limits(gate: GateSection) -> dict[str, float]:
    """``gate.indicator_limits`` over the defaults; ``gate.max_square_below_pgd`` is the black-box limit."""
    limits = {} if gate.max_square_below_pgd is None else {"blackbox_beats_whitebox": gate.max_square_below_pgd}
    limits.update({str(name): value for name, value in gate.indicator_limits.items()})
    return limits


def check_table(gate: GateSection, precision: str = "fp32") -> list[Check]:
    """Every configured check of a candidate declared ``precision``, in the verdict's order."""
    own = gate.int8 if precision == "int8" else None
    unmeasured = NOT_MEASURED.get(precision, {})
    table: list[Check] = []
    for name, figure, op, reference, detail in _ROWS:
        threshold = getattr(gate, _THRESHOLD_FIELD.get(name, name))
        label = name
        if own is not None and name in INT8_THRESHOLDS:
            threshold, label = getattr(own, name), f"{precision}.{name}"
        if threshold is not None:
            missing = unmeasured.get(figure, "not measured")
            table.append(Check(label, figure, op, threshold, reference, detail, missing, gate.drop_rule))
    limits = indicator_limits(gate)
    for name in gate.indicators:
        # An enforced indicator that was not measured fails: the gate cannot vouch for the attacks.
        limit = limits.get(name, DEFAULT_LIMITS[name])
        table.append(Check(f"indicator:{name}", f"indicator:{name}", "<=", limit, False, "attack-failure indicator"))
    table += threat_checks(gate)
    if own is not None and own.min_agreement is not None:
        detail = "INT8 vs FP32 argmax, clean"
        table.append(Check(f"{precision}.min_agreement", "agreement", ">=", own.min_agreement, False, detail))
    return table


def threat_checks(gate: GateSection) -> list[Check]:
    """The rows of ``gate.threats`` (``threat:<label>.min_acc``, ``threat:<label>.max_drop``) and of
    the corruption thresholds (``min_corruption_acc``, ``max_corruption_drop``), each drop decided on
    the paired outcomes under ``gate.drop_rule``."""
    rows: list[tuple[str, str, str, float | None, bool, str]] = []
    for label, limits in gate.threats.items():
        figure = f"threat:{label}"
        worst = "worst case over the threat's attacks, classified by the runtime"
        rows.append((f"{figure}.min_acc", figure, ">=", limits.min_acc, False, worst))
        rows.append((f"{figure}.max_drop", figure, "<=", limits.max_drop, True, "baseline minus candidate"))
    mean, drop = "mean over the corruption cells, classified by the runtime", "baseline minus candidate"
    rows.append(("min_corruption_acc", "corruption_acc", ">=", gate.min_corruption_acc, False, mean))
    rows.append(("max_corruption_drop", "corruption_acc", "<=", gate.max_corruption_drop, True, drop))
    return [
        Check(name, figure, op, threshold, reference, detail, rule=gate.drop_rule)
        for name, figure, op, threshold, reference, detail in rows
        if threshold is not None
    ]


def _compare(check: Check, measured: float | None, detail: str) -> CheckResult:
    if measured is None:
        return CheckResult(check.name, None, check.threshold, check.op, False, check.unmeasured)
    ok = math.isfinite(measured) and (measured >= check.threshold if check.op == ">=" else measured <= check.threshold)
    return CheckResult(check.name, measured, check.threshold, check.op, ok, detail)


def _apply(check: Check, candidate: Measurements, baseline: Measurements | None) -> CheckResult | None:
    if check.figure == "speedup":  # the lower end of the 95% interval; not measurable on noise
        speedup = candidate.speedup
        if speedup is None:
            return CheckResult(check.name, None, check.threshold, check.op, False, NO_BASELINE)
        if not speedup["measurable"]:
            detail = f"not measurable: {speedup['reason']}"
            return CheckResult(check.name, None, check.threshold, check.op, True, detail, False)
        detail = f"95% lower bound of x{speedup['ratio']:.2f} [{speedup['low']:.2f}-{speedup['high']:.2f}]"
        return _compare(check, speedup["low"], detail)
    if check.figure == "sparsity_gap" and candidate.claimed_sparsity is None:
        return None  # nothing claimed, nothing to audit
    measured = candidate.figure(check.figure)
    if check.figure.startswith("indicator:"):  # the limit the indicator was measured against, if recorded
        limit = candidate.indicator_limits.get(check.figure.split(":", 1)[1], check.threshold)
        check = Check(**{**asdict(check), "threshold": limit})
    if check.reference:
        if baseline is None:
            return CheckResult(check.name, None, check.threshold, check.op, False, NO_BASELINE)
        return _drop(check, measured, baseline.figure(check.figure), candidate, baseline)
    return _compare(check, measured, check.detail)


NO_PAIRS = (
    "no per-example outcomes of both models on the same examples, so no paired interval; "
    "gate.drop_rule: upper_bound needs them"
)


def _drop(
    check: Check, measured: float | None, before: float | None, candidate: Measurements, baseline: Measurements
) -> CheckResult:
    """A drop check: decided on the paired outcomes when both models have them on the same examples."""
    if measured is None or before is None:
        return _compare(check, None, check.detail)
    first, second = baseline.outcomes.get(check.figure), candidate.outcomes.get(check.figure)
    pair = None if first is None or second is None else paired_drop(first, second)
    if pair is None:
        if check.rule == "upper_bound":
            return CheckResult(check.name, before - measured, check.threshold, check.op, False, NO_PAIRS)
        return _compare(check, before - measured, check.detail)
    decision = decide(check.rule, pair, check.threshold)
    detail = f"{describe(pair)}; rule {check.rule}"
    if decision.inconclusive:
        needed = decision.examples_needed
        detail += (
            f"; inconclusive: the interval straddles the threshold, about {needed} examples would decide it"
            if needed is not None
            else "; inconclusive: the drop equals the threshold, no number of examples decides it"
        )
    return CheckResult(
        check.name, pair.drop, check.threshold, check.op, decision.passed, detail,
        interval=(pair.low, pair.high), p_value=pair.p_value, examples=pair.examples,
        inconclusive=decision.inconclusive, examples_needed=decision.examples_needed,
    )  # fmt: skip


def paired_drops(candidate: Measurements, baseline: Measurements | None) -> dict[str, PairedDrop]:
    """Per figure both models have per-example outcomes for (on the same examples), the paired drop
    ``baseline - candidate`` with its interval, whether or not a threshold checks it."""
    if baseline is None:
        return {}
    drops = {}
    for name, values in candidate.outcomes.items():
        pair = paired_drop(baseline.outcomes[name], values) if name in baseline.outcomes else None
        if pair is not None:
            drops[name] = pair
    return drops


def apply_checks(table: list[Check], candidate: Measurements, baseline: Measurements | None) -> list[CheckResult]:
    """Each check of ``table`` on ``candidate`` (drops against ``baseline``). A check whose input was
    not measured fails: a gate never passes on a figure it did not see."""
    return [r for r in (_apply(check, candidate, baseline) for check in table) if r is not None]


def run_checks(
    gate: GateSection, candidate: Measurements, baseline: Measurements | None, precision: str = "fp32"
) -> list[CheckResult]:
    """:func:`apply_checks` of the table of ``gate`` for ``precision`` (see :func:`check_table`)."""
    return apply_checks(check_table(gate, precision), candidate, baseline)
