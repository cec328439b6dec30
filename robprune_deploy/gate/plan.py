"""How many evaluation examples a drop check needs before it can pass under ``gate.drop_rule:
upper_bound`` (``robprune gate --plan``).

A drop check passes under ``upper_bound`` when the upper end of the paired interval of
``baseline - candidate`` lies at or below the threshold. If the true drop is ``d`` and the paired
per-example difference has variance ``v`` (for correct/incorrect outcomes: the discordance rate
minus ``d^2``), the interval's upper end sits about ``d + z_{1-a/2} sqrt(v/n)`` above zero, so it
clears the threshold ``t`` with probability ``power`` once

    n >= (z_{1-a/2} + z_{power})^2 v / (t - d)^2.

``d`` and ``v`` come from a pilot (the ``paired_drops`` of an earlier ``gate.json``); without one the
plan assumes no drop and :data:`ASSUMED_DISCORDANCE`, and says so. A pilot drop at or above the
threshold cannot pass at any size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from robprune_deploy.errors import ArgumentError
from robprune_deploy.gate.checks import check_table
from robprune_deploy.gate.drop_rule import examples_for_margin
from robprune_deploy.recipe import Recipe

ASSUMED_DISCORDANCE = 0.10
"""Fraction of examples on which exactly one of the two models is right, assumed without a pilot:
about what a pruned model and its dense parent show under attack on the shipped recipes."""
POWER = 0.8
ALPHA = 0.05


@dataclass(frozen=True)
class PlanRow:
    """One drop check's plan.

    :param source: ``pilot`` (drop and variance from the pilot's paired outcomes) or ``assumed``.
    :param examples_needed: ``None`` when no evaluation size passes (the drop is at or above the threshold).
    :param examples_planned: how many paired examples the recipe evaluates that figure on.
    """

    check: str
    figure: str
    threshold: float
    drop: float
    variance: float
    source: str
    examples_needed: int | None
    examples_planned: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def examples_needed(
    threshold: float, drop: float, variance: float, power: float = POWER, alpha: float = ALPHA
) -> int | None:
    """Paired examples for the interval's upper end to clear ``threshold`` with probability ``power``
    when the true drop is ``drop`` and the per-example difference has ``variance`` (module docstring)."""
    return examples_for_margin(threshold - drop, variance, 1 - alpha, power)


def examples_planned(recipe: Recipe, figure: str) -> int | None:
    """The paired examples the recipe measures ``figure`` on (``None``: not said by the recipe)."""
    ev = recipe.evaluate
    n = ev.num_examples
    threats = {threat.description().label: threat.examples for threat in ev.threats}
    if figure.startswith("threat:") and figure.removeprefix("threat:") in threats:
        cap = threats[figure.removeprefix("threat:")]
    elif figure == "corruption_acc" and ev.corruptions is not None:
        cap = ev.corruptions.examples
    elif figure == "autoattack_acc" or (figure == "square_acc" and ev.attacks != "pgd"):
        cap = ev.ensemble_examples  # Square is then a member of the ensemble
    elif figure == "square_acc":
        cap = ev.square_examples
    else:
        cap = None
    return n if cap is None else min(cap, n)


def read_pilot(path: Path) -> dict[str, dict[str, Any]]:
    """The ``paired_drops`` of a pilot: a ``gate.json``, or a folder holding one (a gate's report
    folder or a run folder)."""
    file = path / "gate.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArgumentError(f"--pilot: cannot read a gate.json at {file}: {exc}") from None
    drops = data.get("paired_drops") if isinstance(data, dict) else None
    if not isinstance(drops, dict):
        raise ArgumentError(f"--pilot: {file} has no paired_drops (written by a gate of this version)")
    return drops


def plan(recipe: Recipe, pilot: dict[str, dict[str, Any]] | None = None) -> list[PlanRow]:
    """A row per drop check of the recipe's gate (see the module's docstring)."""
    rows = []
    for check in check_table(recipe.gate, recipe.gate.precision):
        if not check.reference:
            continue
        known = (pilot or {}).get(check.figure)
        if known is not None:
            drop, variance, source = float(known["drop"]), float(known["spread"]), "pilot"
        else:
            drop, variance, source = 0.0, ASSUMED_DISCORDANCE, "assumed"
        rows.append(
            PlanRow(
                check.name, check.figure, check.threshold, drop, variance, source,
                examples_needed(check.threshold, drop, variance), examples_planned(recipe, check.figure),
            )
        )  # fmt: skip
    return rows


def plan_lines(rows: list[PlanRow], rule: str) -> list[str]:
    """The plan as a person reads it, the assumptions first."""
    lines = [
        f"Examples each drop check needs to pass under drop_rule upper_bound with {POWER:.0%} probability "
        f"(95% paired interval; gate.drop_rule is {rule}):"
    ]
    if not rows:
        return [*lines, "  no max_*_drop check is configured: nothing to plan"]
    for r in rows:
        basis = (
            f"pilot drop {100 * r.drop:+.1f} pts, variance {r.variance:.3f}"
            if r.source == "pilot"
            else f"assumed: no drop, discordance {ASSUMED_DISCORDANCE:.0%} (give --pilot gate.json for your models)"
        )
        need = (
            "cannot pass at any size (drop at or above the threshold)"
            if r.examples_needed is None
            else f"{r.examples_needed:,}"
        )
        planned = "" if r.examples_planned is None else f"; the recipe evaluates {r.examples_planned:,}"
        lines.append(f"  {r.check} <= {100 * r.threshold:.1f} pts: {need} examples ({basis}){planned}")
    return lines
