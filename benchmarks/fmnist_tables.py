"""The Fashion-MNIST grid's tables for the docs, computed from the records of its ``results.json``.

``results.json`` names :func:`grid_tables` as its renderer (``benchmarks/result_tables.py``); the
figures are the same as ``table.md``'s, which ``fmnist_results.render_table`` writes beside it.
"""

from __future__ import annotations

from typing import Any

from fmnist_results import METRICS, PAIRS, _num, _pct, cells_of, mean_sd, paired
from result_tables import column, table, text_column

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
