"""The few lines ``robprune run`` ends with on stdout: what was made, how robust, how fast, where.

``summary.json`` (or ``robprune run --json``) keeps every figure; this is what a person reads first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robprune_deploy.gate.drop_rule import test_of

ARTIFACTS = ("model.onnx", "dense.onnx", "report.md", "summary.json")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _acc(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.3f}"


def _count(summary: dict[str, Any], key: str) -> str:
    dense, pruned = _number(summary.get(f"{key}_dense")), _number(summary.get(f"{key}_pruned"))
    if dense is None or pruned is None:
        return f"{key} n/a"
    change = f" ({pruned / dense - 1:+.1%})" if dense else ""
    return f"{key} {int(dense):,} -> {int(pruned):,}{change}"


def _accuracy_line(summary: dict[str, Any]) -> str:
    s = summary.get
    # The dense model's onnxruntime figures when the gate measured its baseline, else its torch figures.
    dense = "onnx.dense_" if s("onnx.dense_clean_acc") is not None else "torch.dense_"
    parts = [
        f"clean {_acc(s('onnx.clean_acc'))} (dense {_acc(s(dense + 'clean_acc'))})",
        f"PGD {_acc(s('onnx.pgd_acc'))} (dense {_acc(s(dense + 'pgd_acc'))})",
    ]
    if s("onnx.autoattack_acc") is not None:
        parts.append(f"AutoAttack {_acc(s('onnx.autoattack_acc'))}")
    if s("onnx.square_acc") is not None:
        parts.append(f"Square {_acc(s('onnx.square_acc'))}")
    where = f"{s('onnx.examples', '?')} {s('splits.onnx', 'test')} examples, onnxruntime {s('onnx.provider', '?')}"
    return f"accuracy ({where}): " + ", ".join(parts)


def _latency_line(summary: dict[str, Any]) -> str | None:
    s = summary.get
    dense, pruned, speedup = _number(s("latency.dense_ms")), _number(s("latency.pruned_ms")), s("latency.speedup")
    if dense is None or pruned is None:
        return None
    ratio = f"x{speedup:.2f}" if _number(speedup) is not None else "n/a"
    return f"latency (median, batch {s('latency.batch', '?')}): dense {dense:.3f} ms, pruned {pruned:.3f} ms ({ratio})"


_FIGURE_NAMES = {"clean_acc": "clean", "pgd_acc": "PGD", "square_acc": "Square", "autoattack_acc": "AutoAttack"}


def _paired_drop_line(summary: dict[str, Any]) -> str | None:
    """The paired drops from the dense model, AutoAttack first: the figure a release is judged on."""
    drops = summary.get("gate.paired_drops") or {}
    order = sorted(drops, key=lambda name: (name != "autoattack_acc", name))
    parts = []
    for name in order:
        d = drops[name]
        interval = f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
        parts.append(
            f"{_FIGURE_NAMES.get(name, name)} {100 * d['drop']:+.1f} pts {interval} "
            f"(n={d['examples']}, {test_of(d.get('method', ''))} p={d['p_value']:.2g})"
        )
    return "drop from dense, paired, 95% interval: " + "; ".join(parts) if parts else None


def summary_lines(summary: dict[str, Any], out_dir: Path) -> list[str]:
    """The human summary of a finished run (stdout), from its ``summary.json`` entries."""
    s = summary.get
    target = _number(s("target_ratio"))
    lines = [
        f"{s('algorithm', '?')} ({s('granularity', '?')}), target ratio {target if target is not None else '?'}: "
        f"{_count(summary, 'params')}, {_count(summary, 'macs')}",
        _accuracy_line(summary),
    ]
    drops = _paired_drop_line(summary)
    if drops is not None:
        lines.append(drops)
    latency = _latency_line(summary)
    if latency is not None:
        lines.append(latency)
    failures = s("gate.failures") or []
    lines.append("gate: " + ("PASSED" if s("gate.passed") else f"FAILED ({', '.join(failures) or 'no detail'})"))
    if s("int8.gate.passed") is not None:
        int8_failures = ", ".join(s("int8.gate.failures") or [])
        lines.append(
            f"INT8: clean {_acc(s('int8.clean_acc'))}, PGD {_acc(s('int8.pgd_acc'))}; gate "
            + ("PASSED" if s("int8.gate.passed") else f"FAILED ({int8_failures})")
        )
    files = [str(out_dir / name) for name in ARTIFACTS if (out_dir / name).is_file()]
    lines.append("files: " + ", ".join(files))
    if s("mlflow.run_id"):
        registered = s("mlflow.registered_version")
        model = f", registered version {registered} of {s('mlflow.registered_model')}" if registered else ""
        lines.append(f"mlflow: run {s('mlflow.run_id')}{model}")
    return lines
