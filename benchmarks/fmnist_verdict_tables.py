"""The verdict's tables for the docs, computed from its committed results files.

- ``benchmarks/results/fmnist_verdict/plan.json`` (:func:`plan_tables`): the power plan, per claim
  what the planned seeds and test examples can detect with the pilot's sd, written before any trial.
- ``benchmarks/results/fmnist_verdict/results.json`` (:func:`verdict_tables`): the claims (paired
  difference over seeds with its 95% interval, detectable effect, exact McNemar on the pooled
  per-example outcomes, the verdict word) and every cell's figures beside its score-space Hessian
  eigenvalue and cross-seed mask distance.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from fmnist_claims import ARMS, METRICS, Claim, measure_claims, points
from fmnist_verdict_records import grouped
from result_tables import column, table, text_column

PLAN_RENDERER = "fmnist_verdict_tables:plan_tables"
BUDGET_RENDERER = "fmnist_verdict_tables:budget_tables"
RESULTS_RENDERER = "fmnist_verdict_tables:verdict_tables"


def mean_sd(values: Iterable[Any], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± sd (n)`` of the numbers among ``values`` times ``scale``; ``n/a`` when there are none."""
    xs = [scale * float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not xs:
        return "n/a"
    text = f"{statistics.fmean(xs):.{digits}f}"
    if len(xs) > 1:
        text += f" ± {statistics.stdev(xs):.{digits}f} ({len(xs)})"
    return text


def plan_tables(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``power``: one row per planned claim and metric (see :func:`fmnist_claims.power_plan`)."""
    rows = []
    for row in document["power"]:
        sd = "n/a" if row["pilot_sd"] is None else f"{points(row['pilot_sd'], signed=False)} ({row['pilot_setting']})"
        needed = row["seeds_for_claim"]
        rows.append(
            [
                f"{row['claim']} {row['setting']}",
                row["metric"],
                points(row["claimed"]),
                row["seeds"],
                sd,
                points(row["detectable_seeds"], signed=False),
                "n/a" if row["pilot_sd"] is None else (str(needed) if needed else "> 100"),
                f"{row['examples']:,}",
                "n/a" if row["discordance"] is None else f"{row['discordance']:.3f} (bound)",
                points(row["detectable_examples"], signed=False),
            ]
        )
    columns = [
        text_column("claim"),
        text_column("metric"),
        column("claimed"),
        column("seeds"),
        column("pilot sd of the paired differences (setting)"),
        column("detectable over seeds"),
        column("seeds for the claim"),
        column("pooled examples"),
        column("discordance"),
        column("detectable over examples"),
    ]
    return {"power": table(columns, rows)}


def _claim_row(claim: Claim) -> list[Any]:
    paired, pooled = claim.paired, claim.pooled
    interval = "n/a" if paired is None else f"{points(paired.mean)} [{points(paired.low)}, {points(paired.high)}]"
    mcnemar = "n/a" if pooled is None else f"{pooled.p_value:.3g} ({pooled.n:,})"
    newcombe = "n/a" if pooled is None else f"{points(pooled.difference)} [{points(pooled.low)}, {points(pooled.high)}]"
    return [
        claim.name,
        claim.metric.label,
        points(claim.arm.claimed),
        len(claim.seeds),
        interval,
        points(claim.detectable, signed=False),
        mcnemar,
        newcombe,
        f"**{claim.verdict.word}** ({claim.verdict.reason})",
    ]


def verdict_tables(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``claims`` and ``cells`` from the records of ``results.json``."""
    cells = grouped(document["records"])
    claims = measure_claims(cells, ARMS, METRICS)
    claim_columns = [
        text_column("claim"),
        text_column("metric"),
        column("claimed"),
        column("seeds"),
        column("method − baseline, points [95% CI]"),
        column("detectable (80% power)"),
        column("McNemar p (pooled examples)"),
        column("pooled difference [Newcombe 95%]"),
        text_column("verdict"),
    ]
    distances = document.get("mask_distances") or {}
    metric_columns = [column(m.label) for m in METRICS]
    cell_rows = []
    for name, rows in cells.items():
        distance = distances.get(name)
        cell_rows.append(
            [
                name,
                len(rows),
                mean_sd(r.get("sparsity") for r in rows),
                mean_sd(r.get("macs_reduction") for r in rows),
                mean_sd(r.get("clean") for r in rows),
                *(mean_sd(r.get(m.key) for r in rows) for m in METRICS),
                mean_sd(r.get("val_pgd") for r in rows),
                mean_sd((r.get("hessian") for r in rows), scale=1.0, digits=3),
                "n/a" if distance is None else mean_sd(distance["pairs"].values(), scale=1.0, digits=3),
            ]
        )
    cell_columns = [
        text_column("cell"),
        column("seeds"),
        column("sparsity"),
        column("MACs removed"),
        column("clean"),
        *metric_columns,
        column("val PGD-10"),
        column("score-space Hessian dominant eigenvalue"),
        column("cross-seed mask distance"),
    ]
    return {
        "claims": table(claim_columns, [_claim_row(c) for c in claims]),
        "cells": table(cell_columns, cell_rows),
    }


def radius_tables(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``radius``: the validation sweep's radii, each one's validation PGD accuracy per seed and its
    paired gain over the recipe's default, the choice marked (``radius_choice.json``)."""
    rows = []
    for radius, by_seed in sorted(document["scores"].items(), key=lambda item: float(item[0])):
        gain = document["gains"].get(radius)
        mark = "**chosen**" if float(radius) == document["chosen"] else document["skipped"].get(radius, "")
        if float(radius) == document["default"]:
            mark = (mark + ", " if mark else "") + "the recipe's default"
        rows.append(
            [
                float(radius),
                ", ".join(f"{seed}: {100 * v:.1f}" for seed, v in sorted(by_seed.items())),
                mean_sd(by_seed.values()),
                "-" if gain is None else f"{points(gain['mean'])} ± {points(gain['se'], signed=False)}",
                mark,
            ]
        )
    columns = [
        column("swap_fraction"),
        text_column("val PGD-10 per seed"),
        column("mean"),
        column("gain over the default ± SE"),
        text_column(""),
    ]
    return {"radius": table(columns, rows)}


def budget_tables(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``budget``: per sweep its trials, sizes and measured CPU cost per trial, and the total on the
    budget's cores (``budget.json`` of benchmarks/fmnist_verdict_budget.py)."""
    rows = []
    for sweep in document["sweeps"]:
        parts = sweep["parts"]
        search = "-" if sweep["search_epochs"] is None else f"{sweep['search_epochs']} ({sweep['warmup_epochs'] or 0})"
        rows.append(
            [
                sweep["sweep"],
                sweep["trials"],
                sweep["split"],
                f"{sweep['train_images']:,}",
                search,
                f"{sweep['finetune_epochs']} {sweep['finetune_loss']}",
                " / ".join(
                    f"{parts[k]:.0f}" for k in ("search", "finetune", "torch and validation figures", "evaluate")
                ),
                f"{parts['fixed']:.0f}",
                f"{sweep['seconds_per_trial']:.0f}",
                f"{sweep['seconds'] / 3600:.2f}",
            ]
        )
    total = sum(s["seconds"] for s in document["sweeps"])
    cores = document["cores"]
    rows.append(
        ["total", sum(s["trials"] for s in document["sweeps"]), "", "", "", "", "", "", "", f"{total / 3600:.2f}"]
    )
    rows.append(["wall on", f"{cores} cores", "", "", "", "", "", "", "", f"{total / 3600 / cores:.2f} h"])
    columns = [
        text_column("sweep"),
        column("trials"),
        text_column("split"),
        column("training images"),
        column("search epochs (warm-up)"),
        text_column("fine-tuning"),
        column("CPU s: search / fine-tune / torch and val figures / ONNX evaluation"),
        column("fixed CPU s"),
        column("CPU s per trial"),
        column("CPU-hours"),
    ]
    return {"budget": table(columns, rows)}
