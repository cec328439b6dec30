"""The earlier Fashion-MNIST grid's tables for the docs, computed from the records of its ``results.json``.

The grid (``benchmarks/results/fmnist_cpu_short/``, underpowered: 3 seeds and 400 test images) was
run by ``benchmarks/fmnist_grid.py``, which the powered verdict (``benchmarks/fmnist_verdict.py``, on
``robprune sweep``) replaced; its committed records stay renderable here and are the verdict's pilot.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from result_tables import column, table, text_column

PAIRS = (("s2ap", "hydra"), ("mrpf", "l1_filter"))
"""(method, baseline): paired on the same seed and pretrained model."""
METRICS = (
    ("clean", "clean"),
    ("pgd20", "PGD-20"),
    ("pgd50", "PGD-50"),
    ("square", "Square"),
    ("autoattack", "AutoAttack"),
    ("val_pgd", "val PGD"),
)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def cells_of(records: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Finished cell records grouped by cell name, each list sorted by seed."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records.values():
        if record.get("task") == "cell" and record.get("status") == "done":
            grouped.setdefault(record["cell"], []).append(record)
    return {name: sorted(rows, key=lambda r: r["seed"]) for name, rows in sorted(grouped.items())}


def mean_sd(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    xs = [v for v in map(_number, values) if v is not None]
    if not xs:
        return None, None, 0
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def paired(
    method: list[dict[str, Any]], baseline: list[dict[str, Any]], metric: str
) -> tuple[float | None, float | None, int]:
    """Mean and sd over seeds of ``method - baseline`` (same seed, same pretrained model)."""
    base = {r["seed"]: _number(r.get(metric)) for r in baseline}
    diffs = [
        m - b for r in method if (m := _number(r.get(metric))) is not None and (b := base.get(r["seed"])) is not None
    ]
    return mean_sd(diffs)


def _pct(mean: float | None, sd: float | None, n: int, signed: bool = False) -> str:
    if mean is None:
        return "n/a"
    text = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    if sd is not None:
        text += f" ± {100 * sd:.1f}"
    return text if n <= 1 else f"{text} ({n})"


def _num(stat: tuple[float | None, float | None, int], digits: int = 3) -> str:
    mean, sd, _ = stat
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


RENDERER = "fmnist_tables:grid_tables"


def _metrics(grouped: dict[str, list[dict[str, Any]]], pgd_steps: int) -> list[tuple[str, str]]:
    present = [(k, n) for k, n in METRICS if any(r.get(k) is not None for rows in grouped.values() for r in rows)]
    return [(k, n.replace("PGD-50", f"PGD-{pgd_steps}")) for k, n in present]


def grid_tables(document: dict[str, Any], pgd_steps: int = 50) -> dict[str, dict[str, Any]]:
    """``grid`` (every cell's figures), ``paired`` (method minus baseline, same seed), ``mechanism``
    (S2AP/HYDRA sharpness, mask flips, step time) and ``mrs`` (MRPF's allocation)."""
    grouped = cells_of(document.get("records", {}))
    metrics = _metrics(grouped, pgd_steps)
    grid = []
    for name, rows in grouped.items():
        sparsity, macs = (mean_sd(r.get(k) for r in rows)[0] or 0 for k in ("sparsity", "macs_reduction"))
        seconds, cpu = (mean_sd(r.get(k) for r in rows)[0] for k in ("seconds", "cpu_seconds"))
        figures = [_pct(*mean_sd(r.get(k) for r in rows)) for k, _ in metrics]
        grid.append([name, 100 * sparsity, 100 * macs, *figures, _num((seconds, None, 1), 0), _num((cpu, None, 1), 0)])
    one = "{:.1f}"
    grid_columns = [text_column("cell"), column("sparsity", one), column("MACs removed", one)]
    grid_columns += [column(n) for _, n in metrics] + [column("wall s"), column("CPU s")]
    differences = []
    for method, baseline in PAIRS:
        for name, rows in grouped.items():
            setting = name[len(method) + 1 :]
            base_rows = grouped.get(f"{baseline}_{setting}")
            if name.startswith(method + "_") and base_rows:
                diffs = [_pct(*paired(rows, base_rows, k), signed=True) for k, _ in metrics]
                differences.append([f"{method} − {baseline}", setting, *diffs])
    mechanism = [
        [
            name,
            _num(mean_sd(r.get("sharpness") for r in rows)),
            _num(mean_sd(r.get("flips") for r in rows), 0),
            _num(mean_sd(r.get("step_seconds") for r in rows), 3),
        ]
        for name, rows in grouped.items()
        if rows[0].get("sharpness") is not None
    ]
    mrs = [
        [
            name,
            f"{rows[0]['mrs_min']:.3g} … {rows[0]['mrs_max']:.3g}",
            _num(mean_sd(r.get("mrs_cv") for r in rows)),
            f"{rows[0].get('ratio_min', 0):.2f} … {rows[0].get('ratio_max', 0):.2f}",
        ]
        for name, rows in grouped.items()
        if rows[0].get("mrs_max") is not None
    ]
    return {
        "grid": table(grid_columns, grid),
        "paired": table(
            [text_column("method − baseline"), text_column("setting")] + [column(n) for _, n in metrics], differences
        ),
        "mechanism": table(
            [
                text_column("cell"),
                column("final score-space sharpness"),
                column("mask flips per epoch (last quarter)"),
                column("s/step"),
            ],
            mechanism,
        ),
        "mrs": table(
            [
                text_column("cell"),
                column("MRS min … max"),
                column("MRS coefficient of variation"),
                column("channel ratios min … max"),
            ],
            mrs,
        ),
    }
