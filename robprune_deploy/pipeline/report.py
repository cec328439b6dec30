"""``report.md``: the run's summary as a Markdown page a reviewer reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robprune_deploy.atomic import write_text


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "n/a"


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a" if value is None else str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}g}"


def render_report(summary: dict[str, Any], layer_table: str | None = None) -> str:
    """Markdown for ``summary`` (the keys of ``summary.json``)."""
    s = summary.get
    lines = [
        f"# robprune-deploy report: {s('algorithm', '?')} ({s('granularity', '?')}), target {_pct(s('target_ratio'))}",
        "",
        "## Compression",
        "",
        "| | dense | pruned | reduction |",
        "|---|---:|---:|---:|",
    ]
    for key in ("params", "macs"):
        dense, pruned = s(f"{key}_dense"), s(f"{key}_pruned")
        reduction = 1 - pruned / dense if isinstance(dense, (int, float)) and dense and pruned is not None else None
        lines.append(f"| {key} | {_num(dense)} | {_num(pruned)} | {_pct(reduction)} |")
    lines += [
        "",
        "## Accuracy",
        "",
        "| | clean | white-box PGD | black-box Square |",
        "|---|---:|---:|---:|",
        f"| dense (torch) | {_pct(s('torch.dense_clean_acc'))} | {_pct(s('torch.dense_pgd_acc'))} | |",
        f"| pruned (torch) | {_pct(s('torch.clean_acc'))} | {_pct(s('torch.pgd_acc'))} | |",
        f"| pruned (onnxruntime, {s('onnx.provider', 'n/a')}) | {_pct(s('onnx.clean_acc'))} "
        f"| {_pct(s('onnx.pgd_acc'))} | {_pct(s('onnx.square_acc'))} |",
    ]
    if s("val.pgd_acc") is not None:
        lines += [
            f"| dense (torch, validation) | {_pct(s('val.dense_clean_acc'))} | {_pct(s('val.dense_pgd_acc'))} | |",
            f"| pruned (torch, validation) | {_pct(s('val.clean_acc'))} | {_pct(s('val.pgd_acc'))} | |",
        ]
    lines += [
        "",
        f"Rows without a split named: the {s('splits.onnx', 'test')} split ({_num(s('onnx.examples'))} examples). "
        + (
            f"Validation: {_num(s('data.val_examples'))} images held out of the training split, "
            f"PGD-{s('val.pgd_steps')}."
            if s("val.pgd_acc") is not None
            else "No validation split."
        ),
        "",
        f"torch vs onnxruntime max abs logit difference: {_num(s('onnx.max_abs_diff'))}",
    ]
    if s("latency.dense_ms") is not None:
        lines += [
            "",
            "## Latency (onnxruntime, median)",
            "",
            f"batch {s('latency.batch')}: dense {_num(s('latency.dense_ms'))} ms, "
            f"pruned {_num(s('latency.pruned_ms'))} ms",
        ]
    if s("gate.passed") is not None:
        verdict = "PASSED" if s("gate.passed") else "FAILED"
        lines += ["", f"## Gate: {verdict}", ""]
        lines += [f"- failed: {name}" for name in s("gate.failures") or []]
    if layer_table:
        lines += ["", "## Layers", "", layer_table]
    return "\n".join(lines) + "\n"


def write_report(path: Path, summary: dict[str, Any], layer_table: str | None = None) -> Path:
    return write_text(path, render_report(summary, layer_table))
