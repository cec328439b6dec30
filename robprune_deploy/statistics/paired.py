"""The paired difference over seeds: mean, sd, standard error and the Student t interval.

Seeds are the unit of replication: method and baseline share a seed (and the pretrained model it
starts from), so the per-seed differences cancel what the seed does to both. The interval is
``mean +- t_{1-a/2, n-1} * sd / sqrt(n)``, the interval of ``scipy.stats.ttest_rel``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from robprune_deploy.arguments import check_fraction
from robprune_deploy.errors import ArgumentError
from robprune_deploy.statistics._checks import finite_numbers


@dataclass(frozen=True)
class PairedDifference:
    """``method - baseline`` over ``n`` paired seeds.

    :param differences: the per-seed differences, in seed order.
    :param sd: their sample standard deviation (``n - 1`` denominator).
    :param se: the standard error of the mean, ``sd / sqrt(n)``.
    :param low: lower end of the ``confidence`` t interval; :param high: its upper end.
    """

    differences: tuple[float, ...]
    mean: float
    sd: float
    se: float
    low: float
    high: float
    confidence: float

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "differences": list(self.differences), "n": self.n}


def paired_difference(
    method: Sequence[float], baseline: Sequence[float] | None = None, confidence: float = 0.95
) -> PairedDifference:
    """The paired difference ``method - baseline`` (seed ``i`` of one with seed ``i`` of the other),
    or of ``method`` alone when it already holds the differences (``baseline=None``).

    Needs at least 2 pairs: one difference has no spread, so no interval.
    """
    from scipy.stats import t

    confidence = check_fraction(confidence, "confidence", open_interval=True)
    first = finite_numbers(method, "method")
    if baseline is None:
        differences = first
    else:
        second = finite_numbers(baseline, "baseline")
        if len(second) != len(first):
            raise ArgumentError(f"baseline: {len(second)} values for {len(first)} method values; pairs need both")
        differences = [a - b for a, b in zip(first, second, strict=True)]
    n = len(differences)
    if n < 2:
        raise ArgumentError(f"method: a paired interval needs at least 2 pairs, got {n}")
    mean = statistics.fmean(differences)
    sd = statistics.stdev(differences)
    se = sd / math.sqrt(n)
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * se
    return PairedDifference(tuple(differences), mean, sd, se, mean - half, mean + half, confidence)
