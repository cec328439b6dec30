"""A drop check decided on the paired per-example outcomes of candidate and baseline.

The gate measures both models on the same examples, so a drop ``baseline - candidate`` is a paired
difference: its interval is far narrower than two independent accuracies' would suggest, because
the examples both models get right (or both wrong) cancel. Binary outcomes (clean, PGD, Square,
AutoAttack, a threat's worst case) get Newcombe's interval for paired proportions and an exact
McNemar p-value (:func:`~robprune_deploy.statistics.paired_proportions`); outcomes over several
cells per example (``N x k``: the corruption cells) get the Student t interval of the per-example
differences of their means (:func:`~robprune_deploy.statistics.paired_difference`).

Two rules decide a ``max_*_drop`` check (``gate.drop_rule``):

- ``point``: the drop itself is at most the threshold; the interval is reported beside it. This is
  the default because a recipe's thresholds are usually set on point figures and a small
  evaluation set (the digits quick start attacks 150 images with AutoAttack) cannot confirm a
  drop below a few points: ``upper_bound`` would refuse almost every release it gates until the
  evaluation is sized with ``robprune gate --plan``.
- ``upper_bound``: the interval's upper end is at most the threshold. A drop whose interval lies
  wholly above the threshold fails; one whose interval straddles it is *inconclusive*, which fails
  a release and says about how many examples would decide it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from robprune_deploy.statistics import paired_difference, paired_proportions

DropRule = Literal["point", "upper_bound"]
CONFIDENCE = 0.95


def test_of(method: str) -> str:
    """The test a paired drop's p-value comes from, by its ``method``."""
    return "McNemar" if method == "newcombe" else "paired t"


@dataclass(frozen=True)
class PairedDrop:
    """``baseline - candidate`` over ``examples`` paired examples, with its interval.

    :param spread: the per-example variance of the difference (for binary outcomes, the discordance
        rate minus the squared drop), which sizes the evaluation that would decide it.
    :param method: ``newcombe`` (binary outcomes, exact McNemar p) or ``paired-t`` (per-example means).
    """

    drop: float
    low: float
    high: float
    p_value: float
    examples: int
    spread: float
    method: str
    confidence: float = CONFIDENCE

    @property
    def test(self) -> str:
        """The test its p-value comes from."""
        return test_of(self.method)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_drop(baseline: np.ndarray, candidate: np.ndarray, confidence: float = CONFIDENCE) -> PairedDrop | None:
    """The paired drop of ``candidate`` against ``baseline`` (per-example outcomes in the same order),
    or ``None`` when they do not cover the same number of examples (no pairs to compare)."""
    base, cand = np.asarray(baseline), np.asarray(candidate)
    if base.shape != cand.shape or base.size == 0 or base.ndim not in (1, 2):
        return None
    if base.ndim == 1:
        table = paired_proportions(cand, base, confidence)
        drop, low, high = table.drop
        return PairedDrop(drop, low, high, table.p_value, table.n, table.discordance - drop**2, "newcombe", confidence)
    differences = base.astype(float).mean(axis=1) - cand.astype(float).mean(axis=1)
    n = len(differences)
    mean = float(differences.mean())
    if n < 2 or float(differences.std()) == 0.0:  # no spread: the difference is what it is
        return PairedDrop(mean, mean, mean, 1.0 if mean == 0 else 0.0, n, 0.0, "paired-t", confidence)
    from scipy.stats import t

    d = paired_difference(differences.tolist(), None, confidence)
    p_value = float(2 * t.sf(abs(d.mean / d.se), n - 1))  # the two-sided one-sample t test of its interval
    return PairedDrop(d.mean, d.low, d.high, p_value, n, d.sd**2, "paired-t", confidence)


@dataclass(frozen=True)
class DropDecision:
    """A drop check's outcome: ``passed``, or failed and ``inconclusive`` (the interval straddles the
    threshold), with about how many examples would decide it (``None``: none would, the drop sits on
    the threshold)."""

    passed: bool
    inconclusive: bool = False
    examples_needed: int | None = None


def examples_for_margin(
    margin: float, variance: float, confidence: float = CONFIDENCE, power: float = 0.5
) -> int | None:
    """Paired examples for the ``confidence`` interval of a drop whose per-example difference has
    ``variance`` to end ``margin`` short of a threshold with probability ``power`` (normal
    approximation: ``(z_{(1+confidence)/2} + z_power)^2 * variance / margin^2``); ``None`` when the
    margin is not positive (no size does it)."""
    if margin <= 0:
        return None
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2) + norm.ppf(power))
    return max(1, math.ceil(z**2 * max(variance, 0.0) / margin**2))


def examples_to_decide(pair: PairedDrop, threshold: float) -> int | None:
    """About how many paired examples make the interval of a drop like ``pair``'s (same drop, same
    spread) exclude ``threshold`` (:func:`examples_for_margin` at even odds: ``z^2 * spread /
    (threshold - drop)^2``), at least one more than were measured."""
    needed = examples_for_margin(abs(threshold - pair.drop), pair.spread, pair.confidence)
    return None if needed is None else max(needed, pair.examples + 1)


def decide(rule: DropRule, pair: PairedDrop, threshold: float) -> DropDecision:
    """Whether ``pair``'s drop passes ``threshold`` under ``rule`` (see the module's docstring)."""
    if rule == "point":
        return DropDecision(math.isfinite(pair.drop) and pair.drop <= threshold)
    if pair.high <= threshold:
        return DropDecision(True)
    if pair.low > threshold:
        return DropDecision(False)
    return DropDecision(False, True, examples_to_decide(pair, threshold))


def describe(pair: PairedDrop) -> str:
    """``drop 2.0 pts [-1.1, 5.1] (95%, n=150, McNemar p=0.21)`` for a verdict's line."""
    return (
        f"drop {100 * pair.drop:.1f} pts [{100 * pair.low:.1f}, {100 * pair.high:.1f}] "
        f"({100 * pair.confidence:.0f}%, n={pair.examples}, {pair.test} p={pair.p_value:.2g})"
    )


__all__ = [
    "CONFIDENCE",
    "DropDecision",
    "DropRule",
    "PairedDrop",
    "decide",
    "describe",
    "examples_for_margin",
    "examples_to_decide",
    "paired_drop",
    "test_of",
]
