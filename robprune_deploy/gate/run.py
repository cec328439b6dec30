"""``robprune gate``: measure an ONNX model under onnxruntime, check the thresholds, report, promote."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from robprune_deploy.atomic import write_json, write_text
from robprune_deploy.evaluation import OnnxClassifier, compare_latency
from robprune_deploy.evaluation.twin import torch_twin
from robprune_deploy.export import audit_onnx, load_onnx
from robprune_deploy.gate.checks import CheckResult, Measurements, run_checks
from robprune_deploy.gate.validation import validate_gate_inputs
from robprune_deploy.pipeline.context import RunContext
from robprune_deploy.pipeline.deploy import onnx_robustness
from robprune_deploy.reporting import plot_gate
from robprune_deploy.tracking import models as registry

GATE_JSON, GATE_MD, GATE_PNG = "gate.json", "gate.md", "gate.png"


@dataclass
class GateVerdict:
    passed: bool
    checks: list[CheckResult]
    candidate: Measurements
    baseline: Measurements | None
    provider: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failures": self.failures,
            "checks": [c.to_dict() for c in self.checks],
            "candidate": self.candidate.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "provider": self.provider,
            **self.details,
        }


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def measure(ctx: RunContext, path: Path, torch_model: nn.Module | None = None) -> tuple[Measurements, str]:
    """Every figure the gate checks, for one ONNX file, on the recipe's fixed evaluation subset."""
    proto = load_onnx(path)
    twin = torch_model if torch_model is not None else torch_twin(proto)
    result = onnx_robustness(ctx, path, twin.cpu())
    audit = audit_onnx(proto)
    meta = _metadata(proto)
    claimed = float(meta["robprune.claimed_sparsity"]) if "robprune.claimed_sparsity" in meta else None
    audit_sparsity = audit.zero_fraction
    if meta.get("robprune.granularity") == "channel" and "robprune.dense_weight_params" in meta:
        audit_sparsity = 1 - audit.weight_params / int(meta["robprune.dense_weight_params"])
    measurements = Measurements(
        clean_acc=result.clean_acc,
        pgd_acc=result.pgd_acc if result.pgd_acc is not None else float("nan"),
        square_acc=result.square_acc,
        max_abs_diff=result.max_abs_diff,
        audit_sparsity=audit_sparsity,
        claimed_sparsity=claimed,
    )
    return measurements, result.provider


def baseline_path(ctx: RunContext, model: Path) -> Path | None:
    """``gate.baseline`` (path or MLflow URI), else ``dense.onnx`` beside the model when present."""
    spec = ctx.recipe.gate.baseline
    if spec and spec != "dense":
        return registry.resolve_onnx(spec, ctx.recipe.tracking.tracking_uri)
    sibling = model.parent / "dense.onnx"
    return sibling if sibling.is_file() and sibling.resolve() != model.resolve() else None


def evaluate_gate(
    ctx: RunContext, model: Path, torch_model: nn.Module | None = None, dense_torch: nn.Module | None = None
) -> GateVerdict:
    """Measure candidate and baseline, time them side by side, and run every configured check."""
    inputs = validate_gate_inputs(ctx)  # bad input is an error before anything is measured
    inputs.model(model, "candidate")
    base_file = baseline_path(ctx, model)
    if base_file is not None:
        inputs.model(base_file, "baseline")
    candidate, provider = measure(ctx, model, torch_model)
    baseline = None
    details: dict[str, Any] = {
        "model": str(model),
        "subset": {"examples": ctx.recipe.evaluate.num_examples, "seed": ctx.recipe.evaluate.subset_seed},
    }
    if base_file is not None:
        baseline, _ = measure(ctx, base_file, dense_torch)
        lat = ctx.recipe.evaluate.latency
        shape = tuple(ctx.example_inputs.shape[1:])
        base_lat, cand_lat = compare_latency(
            OnnxClassifier(base_file, ctx.recipe.evaluate.providers),
            OnnxClassifier(model, ctx.recipe.evaluate.providers),
            shape,
            lat.batch,
            lat.warmup,
            lat.repeats,
        )
        candidate = Measurements(**{**candidate.to_dict(), "latency_ms": cand_lat.median_ms})
        baseline = Measurements(**{**baseline.to_dict(), "latency_ms": base_lat.median_ms})
        details["baseline_model"] = str(base_file)
    checks = run_checks(ctx.recipe.gate, candidate, baseline) + inputs.checks(candidate, baseline)
    return GateVerdict(all(c.passed for c in checks), checks, candidate, baseline, provider, details)


def render_markdown(verdict: GateVerdict) -> str:
    status = "PASSED" if verdict.passed else "FAILED"
    lines = [
        f"## Robustness gate: {status}",
        "",
        f"Model: `{verdict.details.get('model')}` (onnxruntime provider: {verdict.provider}); "
        f"baseline: `{verdict.details.get('baseline_model', 'none')}`.",
        "",
        "| check | measured | threshold | result |",
        "|---|---:|---:|:---:|",
    ]
    for c in verdict.checks:
        measured = "not measured" if c.measured is None else f"{c.measured:.4f}"
        lines.append(f"| {c.name} | {measured} | {c.op} {c.threshold:.4f} | {'pass' if c.passed else '**FAIL**'} |")
    if not verdict.checks:
        lines.append("| (no thresholds configured) | | | pass |")
    cand, base = verdict.candidate, verdict.baseline
    lines += ["", "| | clean | PGD | Square |", "|---|---:|---:|---:|"]
    for label, m in (("candidate", cand), ("baseline", base)):
        if m is not None:
            square = "n/a" if m.square_acc is None else f"{m.square_acc:.4f}"
            lines.append(f"| {label} | {m.clean_acc:.4f} | {m.pgd_acc:.4f} | {square} |")
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
    return files


def promote(verdict: GateVerdict, name: str, version: str, alias: str | None) -> None:
    """Tag the version with the verdict; move ``alias`` to it only when the gate passed."""
    c = verdict.candidate
    tags = {
        "gate.passed": str(verdict.passed).lower(),
        "gate.failures": ",".join(verdict.failures) or "none",
        "gate.clean_acc": f"{c.clean_acc:.4f}",
        "gate.pgd_acc": f"{c.pgd_acc:.4f}",
        "gate.square_acc": "n/a" if c.square_acc is None else f"{c.square_acc:.4f}",
    }
    registry.tag_version(name, version, tags)
    if verdict.passed and alias:
        registry.set_alias(name, alias, version)
