"""Per-group pruning ratios that hit a global MACs (or params) reduction target.

MRPF: ``r_l = clip(alpha * w_l, 0, max_ratio)`` with ``w_l`` proportional to ``1 / (MRS_l + eps)``
(normalized to mean 1), ``alpha`` found by bisection so the exact cost model reaches the target.
More sensitive groups are pruned less. The uniform baseline uses ``w_l = 1`` for every group.
"""

from __future__ import annotations

from robprune_deploy.errors import PruningError
from robprune_mrpf.cost import CostModel


def inverse_sensitivity_weights(mrs: dict[str, float], eps: float) -> dict[str, float]:
    """``w_l ∝ 1 / (max(MRS_l, 0) + eps)``, normalized to mean 1 (a negative MRS means harmless)."""
    raw = {name: 1.0 / (max(value, 0.0) + eps) for name, value in mrs.items()}
    mean = sum(raw.values()) / len(raw)
    return {name: value / mean for name, value in raw.items()}


def allocate(
    weights: dict[str, float], cost: CostModel, target: float, max_ratio: float, iterations: int = 60
) -> tuple[dict[str, float], float]:
    """Bisect ``alpha`` so that ``cost.reduction(clip(alpha * w, 0, max_ratio))`` reaches ``target``.

    :returns: the ratios and the reduction they achieve (integer channel counts make it a step
        function; the smallest achieved reduction not below the target is returned).
    :raises PruningError: when even ``max_ratio`` everywhere cannot reach the target.
    """

    def ratios_at(alpha: float) -> dict[str, float]:
        return {n: min(max(alpha * w, 0.0), max_ratio) for n, w in weights.items()}

    ceiling = cost.reduction(ratios_at(1e9))
    if ceiling < target:
        raise PruningError(
            f"compression.ratio {target:.3f} is unreachable: pruning every group at max_ratio {max_ratio} "
            f"removes only {ceiling:.3f}"
        )
    low, high = 0.0, max(1.0 / max(min(weights.values()), 1e-12), 1.0) * max_ratio
    while cost.reduction(ratios_at(high)) < target:
        high *= 2
    for _ in range(iterations):
        mid = (low + high) / 2
        if cost.reduction(ratios_at(mid)) >= target:
            high = mid
        else:
            low = mid
    ratios = ratios_at(high)
    return ratios, cost.reduction(ratios)


def refine_to_target(
    ratios: dict[str, float], weights: dict[str, float], cost: CostModel, target: float
) -> dict[str, float]:
    """Give channels back, one at a time, while the reduction stays at or above ``target``.

    Integer channel counts make the bisection overshoot; this walks the overshoot back, returning
    channels to the most sensitive groups (smallest weight) first. The returned ratios are exact
    channel fractions ``removed / channels``.
    """
    removed = {n: round(r * cost.channels[n]) for n, r in ratios.items()}
    removed = {n: min(k, cost.channels[n] - 1) for n, k in removed.items()}

    def as_ratios(counts: dict[str, int]) -> dict[str, float]:
        return {n: k / cost.channels[n] for n, k in counts.items()}

    order = sorted(removed, key=lambda n: weights[n])
    changed = True
    while changed:
        changed = False
        for name in order:
            if removed[name] == 0:
                continue
            trial = {**removed, name: removed[name] - 1}
            if cost.reduction(as_ratios(trial)) >= target:
                removed = trial
                changed = True
    return as_ratios(removed)
