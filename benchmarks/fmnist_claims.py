"""The papers' claims on the Fashion-MNIST grid: power first, then per claim a paired interval and one word.

Per claim (a method against its baseline at one setting, e.g. S2AP - HYDRA at 95% sparsity):

- power: the smallest difference the grid can detect with 80% power, over seeds (paired t test
  from the number of seeds and the sd of the paired differences) and over examples (McNemar from
  the pooled test examples and their discordance rate);
- the paired difference over seeds of the headline robust accuracy, with its 95% t interval;
- exact McNemar and Newcombe's interval on the pooled per-example PGD outcomes (every seed's test
  examples, method and baseline paired on the same example), where the grid stored them;
- the verdict (holds / does not hold / inconclusive) of :func:`robprune_deploy.statistics.claim_verdict`
  on the seed interval: seeds are the unit of replication, the examples of one seed are not.

Every seed is measured on the same evaluated examples, so the seed interval treats them as fixed: it
speaks for the whole test split when the whole split is evaluated (the papers' figures), and for
the subset otherwise, where the per-example interval shows the further sampling error of the subset.
Pooling seeds repeats each example once per seed, so the pooled McNemar p-value is about these
examples under these seeds, not about new examples.

Before a grid runs, :func:`power_plan` states the same power from the planned seeds and test size
and the sd measured by a pilot (by default the committed cpu-short grid).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robprune_deploy.statistics import (
    PairedDifference,
    PairedProportions,
    Verdict,
    detectable_paired_difference,
    mcnemar_detectable_difference,
    mcnemar_examples_needed,
    paired_difference,
    paired_proportions,
    unpack_outcomes,
    verdict,
)

CLAIMS: dict[tuple[str, str], float] = {("s2ap", "hydra"): 0.01, ("mrpf", "l1_filter"): 0.032}
"""(method, baseline) -> the claimed gain in robust accuracy (a fraction): the low end of what each
paper reports, S2AP 1-2 points over HYDRA, MRPF 3.2-7.8 points of PGD accuracy over other structured
robust pruning (shared/ALGORITHMS.md). The low end: a claim that fails there fails everywhere."""
OUTCOME_METRIC = ("pgd50", "PGD-50")
"""The per-example outcomes the grid stores (its own PGD on the ONNX model; benchmarks/fmnist_results.py)."""
MAX_SEEDS = 100
"""Seeds needed above this are reported as more than it."""


@dataclass(frozen=True)
class Claim:
    """One claim measured: the seed interval of ``metric``, the pooled per-example comparison, the word."""

    method: str
    baseline: str
    setting: str
    claimed: float
    metric: str
    seeds: tuple[int, ...]
    paired: PairedDifference | None
    pooled: PairedProportions | None
    verdict: Verdict

    @property
    def name(self) -> str:
        return f"{self.method} − {self.baseline} {self.setting}"


def _value(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _outcomes(record: dict[str, Any], key: str) -> tuple[np.ndarray, str] | None:
    """The record's per-example outcomes for ``key`` and the hash of the examples they were measured on."""
    stored = record.get("outcomes") or {}
    if key not in stored:
        return None
    return unpack_outcomes(stored[key], stored["examples"]), stored["subset_sha256"]


def pooled(method: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]], key: str) -> PairedProportions | None:
    """Method and baseline outcomes of every seed both measured on the same examples, concatenated
    and compared example by example; ``None`` when no seed has both."""
    base = {r["seed"]: _outcomes(r, key) for r in baseline}
    ours, theirs = [], []
    for record in method:
        mine, other = _outcomes(record, key), base.get(record["seed"])
        if mine is not None and other is not None and mine[1] == other[1]:  # same examples, in the same order
            ours.append(mine[0])
            theirs.append(other[0])
    return paired_proportions(np.concatenate(ours), np.concatenate(theirs)) if ours else None


def measure_claims(grouped: dict[str, list[dict[str, Any]]], metric: str) -> list[Claim]:
    """Every claim the grid has both cells for (``grouped``: cell name -> records sorted by seed)."""
    claims = []
    for (method, baseline), claimed in CLAIMS.items():
        for name, rows in grouped.items():
            if not name.startswith(method + "_") or f"{baseline}_{name[len(method) + 1 :]}" not in grouped:
                continue
            setting = name[len(method) + 1 :]
            base_rows = grouped[f"{baseline}_{setting}"]
            base = {r["seed"]: _value(r, metric) for r in base_rows}
            pairs = {
                r["seed"]: (m, b)
                for r in rows
                if (m := _value(r, metric)) is not None and (b := base.get(r["seed"])) is not None
            }
            seeds = tuple(sorted(pairs))
            paired = None
            if len(seeds) >= 2:
                paired = paired_difference([pairs[s][0] for s in seeds], [pairs[s][1] for s in seeds])
                word = verdict(100 * paired.low, 100 * paired.high, 100 * claimed)  # in points: its reason is read
            else:
                word = Verdict("inconclusive", f"{len(seeds)} paired seed(s): no interval")
            per_example = pooled(rows, base_rows, OUTCOME_METRIC[0])
            claims.append(Claim(method, baseline, setting, claimed, metric, seeds, paired, per_example, word))
    return claims


def _points(value: float | None, signed: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def seeds_needed(sd: float, claimed: float) -> int | None:
    """The fewest paired seeds that detect ``claimed`` with 80% power, ``None`` above :data:`MAX_SEEDS`."""
    return next((n for n in range(2, MAX_SEEDS + 1) if detectable_paired_difference(n, sd) <= abs(claimed)), None)


def _power_cells(seeds: int, sd: float | None, examples: int, discordance: float | None, claimed: float) -> list[str]:
    """Detectable over seeds, seeds needed, detectable over examples, examples needed."""
    over_seeds = detectable_paired_difference(seeds, sd) if sd and seeds >= 2 else None
    needed = seeds_needed(sd, claimed) if sd else None
    over_examples = mcnemar_detectable_difference(examples, discordance) if discordance and examples else None
    examples_needed = (
        mcnemar_examples_needed(claimed, discordance) if discordance and abs(claimed) <= discordance else None
    )
    return [
        _points(over_seeds, signed=False),
        "n/a" if sd is None else (str(needed) if needed else f"> {MAX_SEEDS}"),
        _points(over_examples, signed=False),
        "n/a" if examples_needed is None else f"{examples_needed:,}",
    ]


POWER_HEADER = [
    "| claim | claimed | seeds | sd of paired diff | detectable over seeds | seeds for the claim "
    "| examples (pooled) | discordance | detectable over examples | examples for the claim |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def render_power(claims: Sequence[Claim], label: str, outcome_label: str = OUTCOME_METRIC[1]) -> list[str]:
    """The power section of ``table.md``: what this grid could detect, claim by claim."""
    lines = [
        "## Power (first: what these results can detect)",
        "",
        f"Smallest difference detectable with 80% power, two-sided 5%, in points of {label} accuracy: over "
        "seeds, the paired t test (noncentral t) from the seeds and the sd of the paired differences below; "
        f"over examples, McNemar (Connor 1987) from the pooled {outcome_label} outcomes and the fraction "
        "of examples on which exactly one of the two models is right (discordance).",
        "",
        *POWER_HEADER,
    ]
    for claim in claims:
        sd = claim.paired.sd if claim.paired is not None and claim.paired.sd > 0 else None
        examples = claim.pooled.n if claim.pooled is not None else 0
        discordance = claim.pooled.discordance if claim.pooled is not None else None
        cells = _power_cells(len(claim.seeds), sd, examples, discordance, claim.claimed)
        lines.append(
            f"| {claim.name} | {_points(claim.claimed)} | {len(claim.seeds)} | {_points(sd, signed=False)} | "
            f"{cells[0]} | {cells[1]} | {examples or 'n/a'} | "
            f"{'n/a' if discordance is None else f'{discordance:.3f}'} | {cells[2]} | {cells[3]} |"
        )
    return lines


def render_claims(claims: Sequence[Claim], label: str, outcome_label: str = OUTCOME_METRIC[1]) -> list[str]:
    """The claims section of ``table.md``: paired interval, McNemar, Newcombe, verdict."""
    lines = [
        "## Claims",
        "",
        f"Method minus baseline in points: the paired difference over seeds of {label} accuracy with its 95% t "
        f"interval; exact McNemar on the pooled per-example {outcome_label} outcomes, with the pooled "
        "difference and its Newcombe (1998, method 10) 95% interval. The verdict reads the seed interval: "
        "inconclusive when its half-width exceeds the claimed effect, does not hold when it ends short of "
        "the claim, holds when it excludes 0 and reaches the claim (robprune_deploy.statistics.claim_verdict). "
        "Every seed is measured on the same examples: on a subset of the test split, read the seed interval "
        "together with the per-example one, which carries the subset's own sampling error.",
        "",
        f"| claim | claimed | seeds | {label} paired diff [95% CI] | McNemar p | pooled diff [Newcombe 95%] "
        "| verdict |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for claim in claims:
        paired = claim.paired
        interval = (
            "n/a" if paired is None else f"{_points(paired.mean)} [{_points(paired.low)}, {_points(paired.high)}]"
        )
        pooled_ = claim.pooled
        p_value = "n/a" if pooled_ is None else f"{pooled_.p_value:.3g}"
        newcombe = (
            "n/a (not stored)"
            if pooled_ is None
            else f"{_points(pooled_.difference)} [{_points(pooled_.low)}, {_points(pooled_.high)}]"
        )
        lines.append(
            f"| {claim.name} | {_points(claim.claimed)} | {len(claim.seeds)} | {interval} | {p_value} | {newcombe} "
            f"| **{claim.verdict.word}** ({claim.verdict.reason}) |"
        )
    return lines


def _independent_discordance(method: float, baseline: float) -> float:
    """Discordance if the two models erred independently: an upper bound when their errors correlate
    positively, as two prunings of one pretrained model do."""
    return method * (1 - baseline) + baseline * (1 - method)


def power_plan(
    pilot: dict[str, list[dict[str, Any]]], budget: str, seeds: int, examples: int, metric: str, label: str
) -> str:
    """Before a grid runs: per claim, what ``seeds`` paired seeds and ``examples`` test examples per
    seed can detect, with the sd (and discordance) measured by a pilot grid (``pilot``: its cell
    name -> records sorted by seed, from the ``budget`` budget)."""
    lines = [
        f"Power plan: {seeds} paired seeds, {examples:,} test examples per seed; sd of the paired differences "
        f"from the pilot ({budget} budget, {label} accuracy); differences in points, 80% power, two-sided 5%:",
        *POWER_HEADER,
    ]
    bounded = False
    for claim in measure_claims(pilot, metric):
        sd = claim.paired.sd if claim.paired is not None and claim.paired.sd > 0 else None
        if claim.pooled is not None:
            discordance, source = claim.pooled.discordance, ""
        else:
            accuracy = [
                statistics.fmean(v for r in pilot[f"{name}_{claim.setting}"] if (v := _value(r, metric)) is not None)
                for name in (claim.method, claim.baseline)
            ]
            discordance, source, bounded = _independent_discordance(*accuracy), " (bound)", True
        cells = _power_cells(seeds, sd, examples * seeds, discordance, claim.claimed)
        lines.append(
            f"| {claim.name} | {_points(claim.claimed)} | {seeds} | {_points(sd, signed=False)} | {cells[0]} | "
            f"{cells[1]} | {examples * seeds:,} | {discordance:.3f}{source} | {cells[2]} | {cells[3]} |"
        )
    if bounded:
        lines.append(
            "(bound): the pilot stored no per-example outcomes; the discordance if the two models erred "
            "independently, an upper bound for two prunings of one pretrained model."
        )
    return "\n".join(lines)
