"""The gate's report files: ``gate.json``, ``gate.md`` (runtimes side by side), ``gate.png`` and the
security curves."""

from __future__ import annotations

from pathlib import Path

from robprune_deploy.atomic import write_json, write_text
from robprune_deploy.evaluation import Robustness
from robprune_deploy.evaluation.indicators import INDICATORS
from robprune_deploy.gate.checks import CheckResult
from robprune_deploy.gate.verdict import GateVerdict
from robprune_deploy.reporting import plot_gate, plot_security_curves

GATE_JSON, GATE_MD, GATE_PNG, CURVE_PNG = "gate.json", "gate.md", "gate.png", "security_curve.png"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _label(role: str, runtime: str, verdict: GateVerdict) -> str:
    """``candidate`` for one runtime; ``candidate (openvino)`` beside others."""
    return role if len(verdict.per_runtime) == 1 else f"{role} ({runtime})"


def labelled_robustness(verdict: GateVerdict) -> dict[str, Robustness]:
    """Every measured model of the verdict, by its row label."""
    return {
        _label(role, runtime, verdict): r
        for runtime, v in verdict.per_runtime.items()
        for role, r in v.robustness.items()
    }


def _attack_lines(verdict: GateVerdict) -> list[str]:
    lines: list[str] = []
    for label, result in labelled_robustness(verdict).items():
        if not result.members:
            continue
        if not lines:
            lines += ["", f"### Attacks ({result.attacks}: {result.budget})", ""]
            lines += [
                "| model | attack | attacked | broken | accuracy after | seconds | cost |",
                "|---|---|---:|---:|---:|---:|---:|",
            ]
        for m in result.members:
            lines.append(
                f"| {label} | {m['name']} | {m['attacked']} | {m['broken']} | {m['accuracy_after']:.4f} | "
                f"{m['seconds']:.1f} | {m['cost']} |"
            )
    return lines


def _indicator_lines(verdict: GateVerdict) -> list[str]:
    lines: list[str] = []
    for runtime, v in verdict.per_runtime.items():
        result = v.robustness.get("candidate")
        if result is None or not result.indicators:
            continue
        enforced = {c.name.split(":", 1)[1] for c in v.checks if c.name.startswith("indicator:")}
        lines += ["", f"### Attack-failure indicators ({_label('candidate', runtime, verdict)})", ""]
        lines += ["| indicator | measured | limit | enforced | result | how |", "|---|---:|---:|:---:|:---:|---|"]
        for name in INDICATORS:
            ind = result.indicators.get(name)
            if ind is None:
                continue
            state = "**FIRED**" if ind.triggered else "ok"
            lines.append(
                f"| {name} | {_fmt(ind.value)} | {ind.limit:.4f} | {'yes' if name in enforced else 'no'} | {state} | "
                f"{ind.detail} |"
            )
    return lines


def _curve_lines(verdict: GateVerdict) -> list[str]:
    rows = [(label, r) for label, r in labelled_robustness(verdict).items() if r.curve is not None]
    if not rows:
        return []
    lines = ["", "### Security curve (L-inf; FMN merged with the ensemble's points)", ""]
    lines += [
        "| model | median distance | curve acc at eps | FMN alone at eps | AutoAttack acc |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {_fmt(r.median_linf_distance)} | {_fmt(r.curve_acc_at_eps)} | {_fmt(r.fmn_acc_at_eps)} | "
            f"{_fmt(r.autoattack_acc)} |"
        )
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a threat's name must not split the table's row


def _threat_lines(verdict: GateVerdict) -> list[str]:
    """Each extra threat's figures and the corruptions' per type, for every measured model."""
    measured = labelled_robustness(verdict)
    rows = [(label, t) for label, r in measured.items() for t in r.threats.values()]
    lines: list[str] = []
    if rows:
        lines += ["", "### Threats (worst case over each threat's attacks, classified by the runtime)", ""]
        lines += [
            "| model | threat | norm | eps | attacks | examples | accuracy | FMN median distance |",
            "|---|---|---|---:|---|---:|---:|---:|",
        ]
        for label, t in rows:
            d = t.threat
            lines.append(
                f"| {label} | {_cell(d.label)} | {d.norm} | {d.eps:g} | {', '.join(d.attacks)} | {t.examples} | "
                f"{t.accuracy:.4f} | {_fmt(t.median_distance)} |"
            )
    corrupted = [(label, r.corruptions) for label, r in measured.items() if r.corruptions is not None]
    if corrupted:
        types = corrupted[0][1].types
        lines += ["", "### Common corruptions (accuracy per type, over its severities)", ""]
        lines += ["| model | mean | " + " | ".join(types) + " |", "|---|---:|" + "---:|" * len(types)]
        for label, c in corrupted:
            per_type = c.type_accuracy
            cells = " | ".join(_fmt(per_type.get(t)) for t in types)
            lines.append(f"| {label} | {c.mean_accuracy:.4f} | {cells} |")
    return lines


def _result(c: CheckResult) -> str:
    return {"pass": "pass", "not measurable": "not measurable", "inconclusive": "**INCONCLUSIVE**"}.get(
        c.status, "**FAIL**"
    )


def _check_lines(verdict: GateVerdict) -> list[str]:
    """One row per check; with several runtimes, one column per runtime (measured and result)."""
    per = verdict.per_runtime
    if len(per) == 1:
        lines = ["| check | measured | threshold | result | detail |", "|---|---:|---:|:---:|---|"]
        for c in verdict.checks:
            measured = "not measured" if c.measured is None else f"{c.measured:.4f}"
            detail = c.detail.replace("|", "\\|")  # a detail such as |a - b| must not split the table's row
            lines.append(f"| {c.name} | {measured} | {c.op} {c.threshold:.4f} | {_result(c)} | {detail} |")
        return lines + (["| (no thresholds configured) | | | pass | |"] if not verdict.checks else [])
    by_runtime = {name: {c.name: c for c in v.checks} for name, v in per.items()}
    names = list(dict.fromkeys(c.name for v in per.values() for c in v.checks))
    lines = [
        "| check | threshold | " + " | ".join(per) + " |",
        "|---|---:|" + "---:|" * len(per),
    ]
    for name in names:
        found = [by_runtime[runtime].get(name) for runtime in per]
        first = next(c for c in found if c is not None)
        cells = [
            "n/a" if c is None else f"{'not measured' if c.measured is None else f'{c.measured:.4f}'} {_result(c)}"
            for c in found
        ]
        lines.append(f"| {name} | {first.op} {first.threshold:.4f} | " + " | ".join(cells) + " |")
    failed = [f"{runtime} ({', '.join(v.failures)})" for runtime, v in per.items() if not v.passed]
    return [*lines, "", f"Failed on: {'; '.join(failed)}." if failed else "Passed on every runtime."]


def render_markdown(verdict: GateVerdict) -> str:
    status = "PASSED" if verdict.passed else "FAILED"
    per = verdict.per_runtime
    served = (
        f"{verdict.runtime} provider: {verdict.provider}"
        if len(per) == 1
        else "runtimes: " + ", ".join(f"{name} on {v.provider}" for name, v in per.items())
    )
    lines = [
        f"## Robustness gate: {status}",
        "",
        f"Model: `{verdict.details.get('model')}`, declared {verdict.details.get('precision', 'fp32')} "
        f"({served}); baseline: `{verdict.details.get('baseline_model', 'none')}`.",
        "",
        *_check_lines(verdict),
        "",
        "| | clean | clean, batch 1 | PGD | Square | AutoAttack |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for runtime, v in per.items():
        for role, m in (("candidate", v.candidate), ("baseline", v.baseline)):
            if m is not None:
                lines.append(
                    f"| {_label(role, runtime, verdict)} | {m.clean_acc:.4f} | {_fmt(m.clean_acc_b1)} | "
                    f"{m.pgd_acc:.4f} | {_fmt(m.square_acc)} | {_fmt(m.autoattack_acc)} |"
                )
    lines += _attack_lines(verdict) + _indicator_lines(verdict) + _curve_lines(verdict) + _threat_lines(verdict)
    return "\n".join(lines) + "\n"


def write_gate_report(verdict: GateVerdict, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = [
        write_json(directory / GATE_JSON, verdict.to_dict()),
        write_text(directory / GATE_MD, render_markdown(verdict)),
        plot_gate(
            verdict.candidate.to_dict(), verdict.baseline.to_dict() if verdict.baseline else None, directory / GATE_PNG
        ),
    ]
    measured = labelled_robustness(verdict)
    curves = {label: r.curve.distances.tolist() for label, r in measured.items() if r.curve is not None}
    eps = next((r.eps for r in measured.values() if r.eps is not None), None)
    if curves and eps is not None:
        ensemble = {label: r.autoattack_acc for label, r in measured.items()}
        files.append(plot_security_curves(curves, eps, directory / CURVE_PNG, ensemble))
    return files
