"""Two models on the same examples: exact McNemar and the Newcombe interval for the accuracy difference.

The per-example outcomes (correct or not) of a candidate and a baseline on the same examples form a
paired 2x2 table: ``both`` correct, ``candidate_only`` correct, ``baseline_only`` correct, ``neither``.
Only the discordant examples carry information on which model is better:

- exact McNemar: under "equally accurate", each discordant example is the candidate's with
  probability 1/2; the two-sided p-value is twice the smaller binomial tail (at most 1), what
  ``scipy.stats.binomtest(candidate_only, discordant, 0.5)`` gives.
- Newcombe (1998, Statistics in Medicine 17:2635-2650), method 10: the Wilson score intervals of
  the two accuracies combined by "square and add", corrected for their correlation ``phi`` (the
  paired table's phi coefficient, shrunk towards 0 by ``n/2`` when positive). Unlike the Wald
  interval it stays inside [-1, 1] and does not collapse to a point when no example is discordant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from robprune_deploy.arguments import check_count, check_fraction
from robprune_deploy.errors import ArgumentError


@dataclass(frozen=True)
class PairedProportions:
    """The paired 2x2 table of a candidate against a baseline, its accuracy difference
    ``candidate - baseline`` with the Newcombe interval, and the exact McNemar p-value."""

    both: int
    candidate_only: int
    baseline_only: int
    neither: int
    difference: float
    low: float
    high: float
    p_value: float
    confidence: float

    @property
    def n(self) -> int:
        return self.both + self.candidate_only + self.baseline_only + self.neither

    @property
    def discordance(self) -> float:
        """Fraction of examples on which exactly one of the two models is right."""
        return (self.candidate_only + self.baseline_only) / self.n

    @property
    def drop(self) -> tuple[float, float, float]:
        """The accuracy drop ``baseline - candidate`` and its interval ``(drop, low, high)``."""
        return -self.difference, -self.high, -self.low

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n": self.n, "discordance": self.discordance}


def exact_mcnemar_p(candidate_only: int, baseline_only: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts (1 when there are none)."""
    from scipy.stats import binom

    b = check_count(candidate_only, "candidate_only")
    c = check_count(baseline_only, "baseline_only")
    if b + c == 0:
        return 1.0
    return min(1.0, 2.0 * float(binom.cdf(min(b, c), b + c, 0.5)))


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson's score interval for one proportion."""
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return (centre - spread) / denominator, (centre + spread) / denominator


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for one accuracy: ``successes`` correct out of ``n`` examples."""
    from scipy.stats import norm

    successes, n = check_count(successes, "successes"), check_count(n, "n")
    confidence = check_fraction(confidence, "confidence", open_interval=True)
    if n == 0 or successes > n:
        raise ArgumentError(f"successes: {successes} correct out of {n} examples is not a proportion")
    low, high = _wilson(successes, n, float(norm.ppf(0.5 + confidence / 2)))
    # Exactly 0 and 1 at the ends (rounding leaves 1 - 1e-16 where every example is correct).
    return (0.0 if successes == 0 else max(0.0, low)), (1.0 if successes == n else min(1.0, high))


def newcombe_paired_interval(
    both: int, candidate_only: int, baseline_only: int, neither: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's method 10 interval for ``p_candidate - p_baseline`` from a paired 2x2 table."""
    from scipy.stats import norm

    a, b = check_count(both, "both"), check_count(candidate_only, "candidate_only")
    c, d = check_count(baseline_only, "baseline_only"), check_count(neither, "neither")
    confidence = check_fraction(confidence, "confidence", open_interval=True)
    n = a + b + c + d
    if n == 0:
        raise ArgumentError("both: a paired table needs at least one example, got an empty table")
    z = float(norm.ppf(0.5 + confidence / 2))
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = _wilson(a + b, n, z)
    l2, u2 = _wilson(a + c, n, z)
    marginals = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if marginals > 0:  # a zero margin: the accuracies are not random, no correlation to correct for
        cross = a * d - b * c
        shrunk = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
        phi = shrunk / math.sqrt(marginals)
    difference = p1 - p2
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return difference - below, difference + above


def _outcomes(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if (
        array.ndim != 1
        or array.dtype.kind not in "bui"
        or (array.dtype.kind != "b" and not np.isin(array, (0, 1)).all())
    ):
        raise ArgumentError(f"{name}: must be a 1-d sequence of per-example outcomes (booleans or 0/1)")
    return array.astype(bool)


def paired_proportions(candidate: Any, baseline: Any, confidence: float = 0.95) -> PairedProportions:
    """Compare per-example outcomes (True: correct) of a candidate and a baseline on the same examples,
    in the same order: the 2x2 table, the accuracy difference with Newcombe's interval, exact McNemar."""
    first, second = _outcomes(candidate, "candidate"), _outcomes(baseline, "baseline")
    if len(first) != len(second) or len(first) == 0:
        raise ArgumentError(
            f"baseline: {len(second)} outcomes for {len(first)} candidate outcomes; "
            "both need the same, non-empty examples"
        )
    a = int((first & second).sum())
    b = int((first & ~second).sum())
    c = int((~first & second).sum())
    d = len(first) - a - b - c
    low, high = newcombe_paired_interval(a, b, c, d, confidence)
    return PairedProportions(a, b, c, d, (b - c) / len(first), low, high, exact_mcnemar_p(b, c), confidence)
