"""The seeds' claims on Fashion-MNIST: power first, then per claim a paired interval, McNemar and one word.

A claim is a method against its baseline at one setting (S2AP - HYDRA at 99% unstructured, MRPF -
l1_filter at 75% of the MACs), on one robust accuracy (AutoAttack-fast, the headline, and PGD-20).
Per claim:

- the paired difference over seeds (method and baseline share the seed and the start model) with
  its 95% t interval, and the smallest difference those seeds detect at 80% power with the sd they
  show (:func:`robprune_deploy.statistics.detectable_paired_difference`);
- exact McNemar on the pooled per-example outcomes (every seed's test examples, method and baseline
  paired on the same example; each run's ``outcomes.json``), with Newcombe's interval;
- the verdict (holds / does not hold / inconclusive) of :func:`robprune_deploy.statistics.verdict`
  on the seed interval: seeds are the unit of replication, the examples of one seed are not.
  "Inconclusive" is a result: the interval is wider than the claimed effect.

Before the verdict runs, :func:`power_plan` gives the same detectable effects from the planned seeds
and test examples, with the sd of a pilot (the committed cpu-short grid): the design is judged
before its figures exist. Records are plain dicts (benchmarks/fmnist_verdict_records.py writes
them): ``cell`` ``<method>_<setting>``, ``seed``, the accuracies under :data:`METRICS`' keys and
``outcomes``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robprune_deploy.statistics import (
    PairedDifference,
    PairedProportions,
    Verdict,
    detectable_paired_difference,
    mcnemar_detectable_difference,
    paired_difference,
    paired_proportions,
    unpack_outcomes,
    verdict,
)

Grouped = Mapping[str, Sequence[dict[str, Any]]]
"""Cell name -> its records (one per seed)."""


@dataclass(frozen=True)
class Arm:
    """A claim's two sides: the sweeps whose cells are ``<method>_<setting>`` and ``<baseline>_<setting>``,
    and the claimed gain in robust accuracy (a fraction). ``pilot`` names the algorithms whose paired
    sd the power plan borrows from the pilot grid."""

    method: str
    baseline: str
    claimed: float
    label: str
    pilot: tuple[str, str]


S2AP_CLAIM = 0.01
"""S2AP's paper: 1-2 points of robust accuracy over HYDRA, largest at high sparsity; the low end (a claim
that fails there fails everywhere)."""
MRPF_CLAIM = 0.032
"""MRPF's paper: 3.2-7.8 points of PGD accuracy over other structured robust pruning; the low end."""
ARMS = (
    Arm("s2ap", "hydra", S2AP_CLAIM, "S2AP − HYDRA", ("s2ap", "hydra")),
    Arm("s2ap_awp", "hydra_awp", S2AP_CLAIM, "S2AP − HYDRA, AWP fine-tuning", ("s2ap", "hydra")),
    Arm("mrpf", "l1_filter", MRPF_CLAIM, "MRPF − l1_filter", ("mrpf", "l1_filter")),
)


@dataclass(frozen=True)
class Metric:
    """A robust accuracy: its record key, its name in tables, and the key of its per-example outcomes."""

    key: str
    label: str
    outcomes: str


METRICS = (Metric("autoattack", "AutoAttack-fast", "autoattack"), Metric("pgd20", "PGD-20", "pgd"))
"""The headline (AutoAttack-fast, the per-example worst case of its ensemble) first."""
MAX_SEEDS = 100
"""Seeds needed above this are reported as more than it."""


@dataclass(frozen=True)
class Claim:
    """One claim measured: the seed interval, the pooled per-example comparison, the detectable
    effect of its seeds (80% power, with the sd they show) and the word."""

    arm: Arm
    setting: str
    metric: Metric
    seeds: tuple[int, ...]
    paired: PairedDifference | None
    pooled: PairedProportions | None
    detectable: float | None
    verdict: Verdict

    @property
    def name(self) -> str:
        return f"{self.arm.label} {self.setting}"


def value(record: dict[str, Any], key: str) -> float | None:
    """``record[key]`` as a number, ``None`` when missing or not a number."""
    figure = record.get(key)
    return float(figure) if isinstance(figure, (int, float)) and not isinstance(figure, bool) else None


def outcomes_of(record: dict[str, Any], key: str) -> tuple[np.ndarray, str] | None:
    """The record's per-example outcomes for ``key`` and the digest of the examples they were measured on."""
    stored = record.get("outcomes") or {}
    entry = stored.get(key)
    if not isinstance(entry, dict):
        return None
    return unpack_outcomes(entry["bits"], entry["examples"]), stored["subset_sha256"]


def pooled(method: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]], key: str) -> PairedProportions | None:
    """Method and baseline outcomes of every seed both measured on the same examples, concatenated
    and compared example by example; ``None`` when no seed has both."""
    base = {r["seed"]: outcomes_of(r, key) for r in baseline}
    ours, theirs = [], []
    for record in method:
        mine, other = outcomes_of(record, key), base.get(record["seed"])
        if mine is None or other is None or mine[1] != other[1] or len(mine[0]) != len(other[0]):
            continue  # not the same examples in the same order
        ours.append(mine[0])
        theirs.append(other[0])
    return paired_proportions(np.concatenate(ours), np.concatenate(theirs)) if ours else None


def paired_values(
    method: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]], key: str
) -> dict[int, tuple[float, float]]:
    """Seed -> (method, baseline) value of ``key``, for the seeds both measured."""
    base = {r["seed"]: value(r, key) for r in baseline}
    return {
        r["seed"]: (m, b) for r in method if (m := value(r, key)) is not None and (b := base.get(r["seed"])) is not None
    }


def measure_claim(
    arm: Arm, setting: str, metric: Metric, method: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]]
) -> Claim:
    pairs = paired_values(method, baseline, metric.key)
    seeds = tuple(sorted(pairs))
    paired = detectable = None
    if len(seeds) >= 2:
        paired = paired_difference([pairs[s][0] for s in seeds], [pairs[s][1] for s in seeds])
        detectable = detectable_paired_difference(len(seeds), paired.sd) if paired.sd > 0 else None
        if paired.sd > 0:
            word = verdict(paired.low, paired.high, arm.claimed)
        else:  # a zero-width interval is no measurement of the seeds' spread (e.g. every model at chance)
            word = Verdict("inconclusive", f"the {len(seeds)} paired differences are all equal: no spread, no interval")
    else:
        word = Verdict("inconclusive", f"{len(seeds)} paired seed(s): no interval")
    per_example = pooled(method, baseline, metric.outcomes)
    return Claim(arm, setting, metric, seeds, paired, per_example, detectable, word)


def settings_of(grouped: Grouped, prefix: str) -> list[str]:
    """The settings of the cells ``<prefix>_<setting>`` (a longer sweep name sharing the prefix,
    ``s2ap_awp`` for ``s2ap``, is another sweep: its cells are not ``s2ap``'s)."""
    found = []
    for name, rows in grouped.items():
        sweep = rows[0].get("sweep") if rows else None
        if name.startswith(prefix + "_") and (not isinstance(sweep, str) or sweep == prefix):  # the pilot has none
            found.append(name[len(prefix) + 1 :])
    return sorted(found)


def measure_claims(grouped: Grouped, arms: Sequence[Arm] = ARMS, metrics: Sequence[Metric] = METRICS) -> list[Claim]:
    """Every claim whose method and baseline cells are both in ``grouped``, per metric."""
    claims = []
    for arm in arms:
        for setting in settings_of(grouped, arm.method):
            baseline = grouped.get(f"{arm.baseline}_{setting}")
            if not baseline:
                continue
            for metric in metrics:
                claims.append(measure_claim(arm, setting, metric, grouped[f"{arm.method}_{setting}"], baseline))
    return claims


def seeds_needed(sd: float, claimed: float) -> int | None:
    """The fewest paired seeds that detect ``claimed`` with 80% power, ``None`` above :data:`MAX_SEEDS`."""
    return next((n for n in range(2, MAX_SEEDS + 1) if detectable_paired_difference(n, sd) <= abs(claimed)), None)


def independent_discordance(method: float, baseline: float) -> float:
    """Discordance if the two models erred independently: an upper bound when their errors correlate
    positively, as two prunings of one start model do."""
    return method * (1 - baseline) + baseline * (1 - method)


@dataclass(frozen=True)
class PlannedClaim:
    """What a planned claim can detect (80% power, two-sided 5%), before it runs."""

    arm: Arm
    setting: str
    metric: Metric
    seeds: int
    examples: int
    pilot_sd: float | None
    pilot_setting: str | None
    discordance: float | None
    detectable_seeds: float | None
    seeds_for_claim: int | None
    detectable_examples: float | None


def pilot_sd(pilot: Grouped, arm: Arm, setting: str, metric: Metric) -> tuple[float | None, str | None]:
    """The sd of the pilot's paired differences for this claim: at the same setting when the pilot has
    it, else the largest over the pilot's settings (the cautious guess), with the setting it came from."""
    method, baseline = arm.pilot
    found: dict[str, float] = {}
    for name in settings_of(pilot, method):
        pairs = paired_values(pilot[f"{method}_{name}"], pilot.get(f"{baseline}_{name}", []), metric.key)
        if len(pairs) >= 2:
            found[name] = statistics.stdev(m - b for m, b in pairs.values())
    if setting in found:
        return found[setting], setting
    if not found:
        return None, None
    widest = max(found, key=lambda name: found[name])
    return found[widest], widest


def pilot_discordance(pilot: Grouped, arm: Arm, metric: Metric) -> float | None:
    """An upper bound on the discordance of method and baseline (the pilot stored no outcomes): the
    independent-error discordance at the pilot's mean accuracies, the largest over its settings."""
    method, baseline = arm.pilot
    bounds = []
    for name in settings_of(pilot, method):
        accuracy = [
            [v for r in pilot.get(f"{algorithm}_{name}", []) if (v := value(r, metric.key)) is not None]
            for algorithm in (method, baseline)
        ]
        if all(accuracy):
            bounds.append(independent_discordance(*(statistics.fmean(a) for a in accuracy)))
    return max(bounds) if bounds else None


def power_plan(
    pilot: Grouped, planned: Sequence[tuple[Arm, str, int]], examples: Mapping[str, int]
) -> list[PlannedClaim]:
    """Per planned claim (``(arm, setting, seeds)``) and metric: what its seeds detect with the pilot's
    sd, and what its pooled examples (``examples[metric.key]`` per seed) detect with the pilot's
    discordance bound."""
    rows = []
    for arm, setting, seeds in planned:
        for metric in METRICS:
            sd, source = pilot_sd(pilot, arm, setting, metric)
            discordance = pilot_discordance(pilot, arm, metric)
            pooled_examples = seeds * examples[metric.key]
            rows.append(
                PlannedClaim(
                    arm,
                    setting,
                    metric,
                    seeds,
                    pooled_examples,
                    sd,
                    source,
                    discordance,
                    detectable_paired_difference(seeds, sd) if sd and seeds >= 2 else None,
                    seeds_needed(sd, arm.claimed) if sd else None,
                    mcnemar_detectable_difference(pooled_examples, discordance) if discordance else None,
                )
            )
    return rows


def points(figure: float | None, signed: bool = True) -> str:
    """A fraction in points of accuracy, ``n/a`` when missing."""
    if figure is None or not math.isfinite(figure):
        return "n/a"
    return f"{100 * figure:+.1f}" if signed else f"{100 * figure:.1f}"
