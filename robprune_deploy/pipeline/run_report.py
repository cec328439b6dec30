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


def render_report(summary: dict[str, Any], layer_table: str | None = None, gate: dict[str, Any] | None = None) -> str:
    """Markdown for ``summary`` (the keys of ``summary.json``) and the gate's verdict (``gate.json``'s
    contents), whose checks are listed in the gate section."""
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
        f"Robust accuracy on {s('onnx.examples', '?')} fixed {s('splits.onnx', 'test')} examples; "
        f"attacks: {s('onnx.attacks', 'pgd')} "
        f"({s('onnx.attack_budget') or 'PGD + Square'}).",
        "",
        "| | clean | white-box PGD | AutoAttack (worst case) | Square (after the rest) | median L-inf distance |",
        "|---|---:|---:|---:|---:|---:|",
        f"| dense (torch) | {_pct(s('torch.dense_clean_acc'))} | {_pct(s('torch.dense_pgd_acc'))} | | | |",
        f"| pruned (torch) | {_pct(s('torch.clean_acc'))} | {_pct(s('torch.pgd_acc'))} | | | |",
        f"| dense (onnxruntime) | {_pct(s('onnx.dense_clean_acc'))} | {_pct(s('onnx.dense_pgd_acc'))} "
        f"| {_pct(s('onnx.dense_autoattack_acc'))} | {_pct(s('onnx.dense_square_acc'))} "
        f"| {_num(s('onnx.dense_median_linf_distance'))} |",
        f"| pruned (onnxruntime, {s('onnx.provider', 'n/a')}) | {_pct(s('onnx.clean_acc'))} "
        f"| {_pct(s('onnx.pgd_acc'))} | {_pct(s('onnx.autoattack_acc'))} | {_pct(s('onnx.square_acc'))} "
        f"| {_num(s('onnx.median_linf_distance'))} |",
    ]
    if s("val.pgd_acc") is not None:
        lines += [
            f"| dense (torch, validation) | {_pct(s('val.dense_clean_acc'))} | {_pct(s('val.dense_pgd_acc'))} | | | |",
            f"| pruned (torch, validation) | {_pct(s('val.clean_acc'))} | {_pct(s('val.pgd_acc'))} | | | |",
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
    indicators = {k.removeprefix("indicators."): v for k, v in summary.items() if k.startswith("indicators.")}
    if indicators:
        lines += ["", "## Attack-failure indicators (pruned model)", "", "| indicator | value |", "|---|---:|"]
        lines += [f"| {name} | {_num(value)} |" for name, value in indicators.items()]
    if s("latency.dense_ms") is not None:
        lines += [
            "",
            "## Latency (onnxruntime, interleaved runs)",
            "",
            "| batch | dense median (IQR) ms | pruned median (IQR) ms | speed-up [95% interval] |",
            "|---:|---:|---:|---|",
        ]
        for key, batch in (("", s("latency.batch")), ("_b1", 1)):
            measurable = s(f"latency.speedup{key}_measurable")
            speedup = f"x{_num(s(f'latency.speedup{key}'))} [{_num(s(f'latency.speedup{key}_low'))}-" + (
                f"{_num(s(f'latency.speedup{key}_high'))}]" + ("" if measurable is not False else " not measurable")
            )
            lines.append(
                f"| {batch} | {_num(s(f'latency.dense{key}_ms'))} ({_num(s(f'latency.dense{key}_iqr_ms'))}) "
                f"| {_num(s(f'latency.pruned{key}_ms'))} ({_num(s(f'latency.pruned{key}_iqr_ms'))}) | {speedup} |"
            )
    lines += gate_lines(summary, gate)
    lines += _int8_lines(summary)
    if layer_table:
        lines += ["", "## Layers", "", layer_table]
    return "\n".join(lines) + "\n"


def _int8_lines(summary: dict[str, Any]) -> list[str]:
    s = summary.get
    if s("int8.clean_acc") is None:
        return []
    lines = [
        "",
        f"## INT8 (nncf.quantize, preset {s('int8.preset')}, {_num(s('int8.calibration_size'))} calibration images)",
        "",
        f"Graph: {_num(s('int8.int8_initializers'))} INT8 and {_num(s('int8.uint8_initializers'))} UINT8 "
        f"initializers, {_num(s('int8.quantize_nodes'))} QuantizeLinear / {_num(s('int8.dequantize_nodes'))} "
        f"DequantizeLinear nodes; pruned channel counts kept: {s('int8.same_channels')}.",
        "",
        "| | clean | PGD, straight-through twin | PGD transferred from FP32 | white-box worst case | Square |",
        "|---|---:|---:|---:|---:|---:|",
        f"| FP32 pruned | {_pct(s('onnx.clean_acc'))} | | | {_pct(s('onnx.pgd_acc'))} | "
        f"{_pct(s('onnx.square_acc')) if s('onnx.attacks') == 'pgd' else 'in the ensemble above'} |",
        f"| INT8 pruned ({s('int8.provider', 'n/a')}) | {_pct(s('int8.clean_acc'))} | {_pct(s('int8.ste_pgd_acc'))} "
        f"| {_pct(s('int8.transfer_pgd_acc'))} | {_pct(s('int8.pgd_acc'))} | {_pct(s('int8.square_acc'))} |",
        "",
        f"INT8 vs FP32 argmax agreement: {_pct(s('int8.agreement'))}; straight-through twin vs onnxruntime: "
        f"max abs logit difference {_num(s('int8.max_abs_diff'))}, agreement {_pct(s('int8.twin_agreement'))}. "
        f"Drops (FP32 minus INT8): clean {_pct(s('int8.clean_drop'))}, PGD {_pct(s('int8.pgd_drop'))}.",
    ]
    if s("int8.latency.dense_ms") is not None:
        lines += [
            "",
            "| batch | FP32 dense ms | FP32 pruned ms | INT8 pruned ms | INT8 speed-up vs dense | vs pruned |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for key, batch in (("", s("int8.latency.batch")), ("_b1", 1)):
            lines.append(
                f"| {batch} | {_num(s(f'int8.latency.dense{key}_ms'))} | {_num(s(f'int8.latency.pruned{key}_ms'))} "
                f"| {_num(s(f'int8.latency.int8_vs_pruned{key}_ms'))} "
                f"| x{_num(s(f'int8.latency.speedup_vs_dense{key}'))} "
                f"| x{_num(s(f'int8.latency.speedup_vs_pruned{key}'))} |"
            )
    if s("int8.gate.passed") is not None:
        lines += ["", f"INT8 gate: {'PASSED' if s('int8.gate.passed') else 'FAILED'}"]
        lines += [f"- failed: {name}" for name in s("int8.gate.failures") or []]
    return lines


def _threshold(check: dict[str, Any]) -> str:
    return f"{check.get('op', '')} {_num(check.get('threshold'), 4)}"


def _alias_line(entry: dict[str, Any]) -> str:
    """One alias change of the registration (``gate.json``'s ``alias`` entries)."""
    action, old, new = entry.get("action"), entry.get("from"), entry.get("to")
    if action == "removed":
        change = f"removed from version {old}"
    elif action == "kept":
        change = f"kept on version {new}" if new else "not set"
    elif old:
        change = f"{action}: version {old} -> version {new}"
    else:
        change = f"set on version {new}"
    return f"- alias `{entry.get('alias')}`: {change} ({entry.get('reason', '')})"


def gate_lines(summary: dict[str, Any], gate: dict[str, Any] | None) -> list[str]:
    """The gate section: verdict, what was compared, every check with its figure and threshold,
    and the registration (version, alias moves). ``gate`` is ``gate.json``'s contents."""
    passed = summary.get("gate.passed") if gate is None else gate.get("passed")
    if passed is None:
        return []
    lines = ["", f"## Gate: {'PASSED' if passed else 'FAILED'}", ""]
    if gate is None:  # only the summary's figures are known
        lines += [f"- failed: {name}" for name in summary.get("gate.failures") or []]
        return lines
    lines += [
        f"Model `{gate.get('model', '?')}` ({gate.get('precision', 'fp32')}, onnxruntime {gate.get('provider', '?')}) "
        f"against baseline `{gate.get('baseline_model') or 'none'}`; details in `gate.md` and `gate.json`.",
        "",
        "| check | measured | threshold | result | detail |",
        "|---|---:|---:|:---:|---|",
    ]
    checks = gate.get("checks") or []
    for c in checks:
        measured = "not measured" if c.get("measured") is None else _num(c["measured"], 4)
        result = "not measurable" if not c.get("measurable", True) else "pass" if c.get("passed") else "**FAIL**"
        detail = str(c.get("detail", "")).replace("|", "\\|")  # |a - b| must not split the row
        lines.append(f"| {c.get('name')} | {measured} | {_threshold(c)} | {result} | {detail} |")
    if not checks:
        lines.append("| (no thresholds configured) | | | pass | |")
    if gate.get("registered_version") is not None:
        lines += ["", f"Registered as version {gate['registered_version']} of `{gate.get('registered_model', '?')}`."]
        lines += [_alias_line(entry) for entry in gate.get("alias") or []]
    return lines


def write_report(
    path: Path, summary: dict[str, Any], layer_table: str | None = None, gate: dict[str, Any] | None = None
) -> Path:
    return write_text(path, render_report(summary, layer_table, gate))
