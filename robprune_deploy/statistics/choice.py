"""The validation sweep's choice: keep the default unless a variant beats it by more than one
standard error of their paired difference over at least 2 seeds.

Each variant (a setting of a method's hyper-parameters) and the method's default run on the same
seeds; the score is a validation figure (robust accuracy on the validation split). The best of
several variants on one seed mostly picks the luckiest seed: the difference a choice rests on
must be measured with its own noise, the spread of ``variant - default`` across seeds. One seed
has no such spread, so a variant needs at least 2 seeds paired with the default to be chosen.
Among the variants whose mean paired gain exceeds its standard error (``sd / sqrt(n)``), the one
with the largest mean gain is chosen; variants that switch the method's own mechanism off are
passed in ``excluded`` (with the reason) and never chosen.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from robprune_deploy.arguments import check_count
from robprune_deploy.errors import ArgumentError
from robprune_deploy.statistics.paired import PairedDifference, paired_difference

Key = TypeVar("Key", bound=Hashable)
MIN_SEEDS = 2
"""Seeds a variant must share with the default: the fewest with a spread to estimate."""


@dataclass(frozen=True)
class SweepChoice(Generic[Key]):
    """The chosen variant and why.

    :param gains: for every variant with enough seeds paired with the default, its paired
        difference ``variant - default`` (mean gain, its sd and standard error).
    :param skipped: variants that could not be chosen and why (too few seeds, excluded).
    """

    chosen: Key
    reason: str
    gains: dict[Key, PairedDifference] = field(default_factory=dict)
    skipped: dict[Key, str] = field(default_factory=dict)


def choose_variant(
    scores: Mapping[Key, Mapping[int, float]],
    default: Key,
    excluded: Mapping[Key, str] | None = None,
    min_seeds: int = MIN_SEEDS,
) -> SweepChoice[Key]:
    """Choose among ``scores`` (variant -> seed -> validation score, higher is better); ``default``
    is kept unless a variant beats it by more than one standard error of the paired difference over
    at least ``min_seeds`` seeds (see the module docstring)."""
    min_seeds = check_count(min_seeds, "min_seeds", low=2)
    if default not in scores:
        raise ArgumentError(f"default: variant {default!r} has no scores; the choice compares every variant to it")
    excluded = dict(excluded or {})
    base = scores[default]
    gains: dict[Key, PairedDifference] = {}
    skipped: dict[Key, str] = {}
    for key, values in scores.items():
        if key == default:
            continue
        if key in excluded:
            skipped[key] = excluded[key]
            continue
        seeds = sorted(set(values) & set(base))
        if len(seeds) < min_seeds:
            skipped[key] = f"{len(seeds)} seed(s) paired with the default, {min_seeds} needed"
            continue
        gains[key] = paired_difference([values[s] for s in seeds], [base[s] for s in seeds])
    winners = [key for key, gain in gains.items() if gain.mean > gain.se]
    if not winners:
        why = "no variant beats it by more than one paired standard error" if gains else "no variant has enough seeds"
        return SweepChoice(default, f"default kept: {why}", gains, skipped)
    best = max(winners, key=lambda k: gains[k].mean)  # the first of equal gains, in the scores' order
    gain = gains[best]
    reason = f"mean gain {gain.mean:+.4g} over {gain.n} seeds exceeds its standard error {gain.se:.4g}"
    return SweepChoice(best, reason, gains, skipped)
