"""S2AP's ascent radius calibrated by what it does to the mask: the fraction of kept entries one ascent swaps.

A fixed relative radius ``gamma`` means very different things in different layers and at different
sparsities (on the digits CNN gamma 0.1 swaps 12-18% of the kept weights per ascent and kills the
network at 99%, gamma 0.01 moves the final mask less than a change of data order does). The mask is
what the loss sees, so the radius is set by its effect on the mask instead: for a target fraction
``f``, the gamma of a layer is the one at which one ascent step ``s + gamma * ||s|| * g / ||g||``
swaps ``f`` of that layer's kept entries out of the top-k [defined here].

The swap count as a function of gamma needs no forward pass, only top-k selections of the moved
scores, so the calibration reuses the ascent's own gradient and costs a few dozen top-k's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from robprune_s2ap.scores import ScoreSet, count_true, top_k_mask

BISECTION_STEPS = 30
"""Halvings of the bracket: its width ends below 1e-9 of its upper end, far under any gamma that matters."""

MAX_GAMMA = 1e4
"""Upper end of the search: a layer whose mask does not reach the target by then gets this gamma."""


def swapped_entries(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> int:
    """Entries kept in ``before`` and not in ``after`` (a top-k keeps its count, so also those that came in)."""
    return sum(count_true(b > a) for b, a in zip(before, after, strict=True))


def kept_entries(masks: Sequence[torch.Tensor]) -> int:
    return sum(count_true(m) for m in masks)


def _unit_directions(scores: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``||s_l|| * g_l / (||g_l|| + 1e-12)``: the ascent step of each layer at gamma 1."""
    return [s.detach().norm() * g / (g.norm() + 1e-12) for s, g in zip(scores, grads, strict=True)]


def _solve(fraction_at: Callable[[float], float], target: float) -> float:
    """The gamma at which ``fraction_at`` crosses ``target`` (the fraction is a step function of gamma).

    Brackets the crossing by doubling, then bisects it; of the two ends, returns the one whose
    fraction is closer to the target (in a layer with few kept entries a single swap can overshoot
    the target by more than no swap misses it).
    """
    low, high = 0.0, 1e-3
    while fraction_at(high) < target:
        low, high = high, 2.0 * high
        if high > MAX_GAMMA:
            return MAX_GAMMA
    for _ in range(BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if fraction_at(middle) < target:
            low = middle
        else:
            high = middle
    if low == 0.0:
        return high
    return low if abs(fraction_at(low) - target) < abs(fraction_at(high) - target) else high


def calibrate_gammas(score_set: ScoreSet, grads: Sequence[torch.Tensor], target: float) -> list[float]:
    """Per score vector, the gamma at which one ascent along ``grads`` swaps ``target`` of its kept entries.

    With a global top-k the layers compete for the same budget, so one gamma (shared by all
    layers) is solved for the swap fraction of the whole mask instead. A vector whose gradient is
    zero, or that keeps every entry, gets gamma 0: no radius moves its mask.
    """
    scores = [s.detach() for s in score_set.parameters()]
    current = score_set.masks_for(scores)
    steps = _unit_directions(scores, grads)
    if score_set.scope == "global":
        kept = max(kept_entries(current), 1)

        def joint(gamma: float) -> float:
            moved = score_set.masks_for([s + gamma * d for s, d in zip(scores, steps, strict=True)])
            return swapped_entries(current, moved) / kept

        return [_solve(joint, target)] * len(scores)
    gammas = []
    for vector, s, d, mask in zip(score_set.vectors.values(), scores, steps, current, strict=True):
        if int(mask.sum()) == mask.numel() or not bool(d.any()):
            gammas.append(0.0)
        else:
            gammas.append(_solve(_layer_fraction(s, d, mask, vector.keep), target))
    return gammas


def _layer_fraction(s: torch.Tensor, d: torch.Tensor, mask: torch.Tensor, keep: int) -> Callable[[float], float]:
    """One layer's swapped fraction of kept entries as a function of its gamma (local top-k)."""
    kept = int(mask.sum())

    def fraction(gamma: float) -> float:
        return swapped_entries([mask], [top_k_mask(s + gamma * d, keep)]) / kept

    return fraction
