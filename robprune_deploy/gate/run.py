"""``robprune gate``: measure an ONNX model under onnxruntime, check the thresholds, report, promote."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from torch import nn

from robprune_deploy.atomic import write_json, write_text
from robprune_deploy.errors import OnnxModelError, QuantizationError, RecipeError
from robprune_deploy.evaluation import OnnxClassifier, OnnxRobustness
from robprune_deploy.evaluation.indicators import INDICATORS
from robprune_deploy.evaluation.latency import compare_speed
from robprune_deploy.evaluation.quantized import Int8Robustness
from robprune_deploy.evaluation.twin import torch_twin
from robprune_deploy.export import load_onnx
from robprune_deploy.gate.checks import CheckResult, Measurements, run_checks, run_int8_checks
from robprune_deploy.gate.measure import int8_measurements, measure_int8, measure_onnx, measurements
from robprune_deploy.gate.staging import BASELINE_SHA256_TAG, SHA256_TAG
from robprune_deploy.gate.validation import (
    EvaluationData,
    GateInputs,
    check_declared_precision,
    validate_gate_inputs,
)
from robprune_deploy.quantization.quantize import QDQ_OPS
from robprune_deploy.recipe import Precision, Recipe
from robprune_deploy.recipe.schema import NO_BASELINE
from robprune_deploy.reporting import plot_gate, plot_security_curves
from robprune_deploy.tracking import models as registry

GATE_JSON, GATE_MD, GATE_PNG, CURVE_PNG = "gate.json", "gate.md", "gate.png", "security_curve.png"
FP32_ONNX = "model.onnx"
"""The FP32 model beside an INT8 one (the pipeline writes ``model.onnx`` and ``model.int8.onnx``)."""


@dataclass
class GateVerdict:
    passed: bool
    checks: list[CheckResult]
    candidate: Measurements
    baseline: Measurements | None
    provider: str
    details: dict[str, Any] = field(default_factory=dict)
    robustness: dict[str, OnnxRobustness] = field(default_factory=dict)

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
            "robustness": {label: r.to_dict() for label, r in self.robustness.items()},
            **self.details,
        }


def baseline_path(recipe: Recipe, model: Path, source: str | None = None, beside: Path | None = None) -> Path | None:
    """The baseline ONNX file: ``gate.baseline`` (path or MLflow URI; ``none``: no baseline); else
    ``dense.onnx`` beside the model; else, for a model given as an MLflow URI (``source``), the dense
    model its run recorded.

    An INT8 model's baseline is its FP32 model: ``gate.int8.baseline``, else ``model.onnx`` beside
    it, else the FP32 model its run recorded.

    :param beside: the file ``model`` was copied from, whose folder is searched (the gate measures a
        staging copy, see :mod:`robprune_deploy.gate.staging`); default ``model`` itself.
    """
    if recipe.gate.precision == "int8":
        return fp32_path(recipe, model, source, beside)
    spec = recipe.gate.baseline
    if spec == NO_BASELINE:
        return None
    if spec and spec != "dense":
        return registry.resolve_onnx(spec, recipe.tracking.tracking_uri, "gate.baseline")
    origin = beside or model
    sibling = origin.parent / "dense.onnx"
    if sibling.is_file() and sibling.resolve() != origin.resolve():
        return sibling
    recorded = registry.recorded_baseline(source) if source else None
    return _recorded(recipe, recorded, source, registry.BASELINE_TAG)


def fp32_path(recipe: Recipe, model: Path, source: str | None = None, beside: Path | None = None) -> Path | None:
    """The FP32 model an INT8 ``model`` was quantized from (see :func:`baseline_path`)."""
    spec = recipe.gate.int8.baseline
    if spec:
        return registry.resolve_onnx(spec, recipe.tracking.tracking_uri, "gate.int8.baseline")
    origin = beside or model
    sibling = origin.parent / FP32_ONNX
    if sibling.is_file() and sibling.resolve() != origin.resolve():
        return sibling
    recorded = registry.recorded_baseline(source, registry.FP32_TAG) if source else None
    return _recorded(recipe, recorded, source, registry.FP32_TAG)


def _recorded(recipe: Recipe, uri: str | None, source: str | None, tag: str) -> Path | None:
    """The model a tag of ``source`` recorded (already checked to stay inside the artifact store)."""
    if uri is None:
        return None
    return registry.resolve_onnx(uri, recipe.tracking.tracking_uri, f"model {source}: tag {tag}")


def declared(recipe: Recipe, precision: Precision) -> Recipe:
    """``recipe`` with ``gate.precision`` set: what the gated model is, as its producer knows it.

    :raises RecipeError: for a precision other than ``fp32`` and ``int8``.
    """
    if precision not in get_args(Precision):
        raise RecipeError(f"precision: must be one of {', '.join(get_args(Precision))}, got {precision!r}")
    return recipe.model_copy(update={"gate": recipe.gate.model_copy(update={"precision": precision})})


def _twin(path: Path, torch_model: nn.Module | None, role: str = "candidate") -> nn.Module:
    if torch_model is not None:
        return torch_model
    proto = load_onnx(path)
    try:
        return torch_twin(proto, f"{role} {path}")
    except OnnxModelError as exc:
        hint = (
            "; an INT8 model is gated with --precision int8 (gate.precision: int8)"
            if any(n.op_type in QDQ_OPS for n in proto.graph.node)
            else ""
        )
        raise OnnxModelError(f"{exc}{hint}") from None


def evaluate_gate(
    recipe: Recipe,
    model: Path,
    data: EvaluationData,
    *,
    torch_model: nn.Module | None = None,
    candidate: OnnxRobustness | None = None,
    dense_torch: nn.Module | None = None,
    baseline_file: Path | None = None,
    int8_candidate: Int8Robustness | None = None,
    fp32_reference: OnnxRobustness | None = None,
    show_progress: bool = True,
) -> GateVerdict:
    """Validate what the gate is given, measure candidate and baseline, time them side by side, and
    run every configured check plus the integrity checks.

    :param data: the fixed evaluation subset and the classifier interface the data implies.
    :param candidate: the candidate's figures when already measured (the pipeline's evaluate stage),
        so they are not measured twice.
    :param baseline_file: the baseline ONNX file (see :func:`baseline_path`), or none. For a model
        declared INT8 (``gate.precision``; never guessed from the graph) it is the FP32 model, and
        ``dense_torch`` that model's twin.
    :param int8_candidate: an INT8 candidate's figures when already measured.
    :param fp32_reference: the FP32 model's figures when already measured.
    """
    inputs = validate_gate_inputs(recipe, data)  # bad input is an error before anything is measured
    check_declared_precision(load_onnx(model), model, recipe.gate.precision)
    inputs.model(model, "candidate")
    if baseline_file is not None:
        inputs.model(baseline_file, "baseline")
    if recipe.gate.precision == "int8":
        return _evaluate_int8_gate(
            recipe, model, data, inputs, baseline_file, dense_torch, int8_candidate, fp32_reference, show_progress
        )
    batches = data.batches
    if candidate is None:
        candidate = measure_onnx(recipe, model, batches, _twin(model, torch_model).cpu(), show_progress=show_progress)
    measured = inputs.served(measurements(candidate, load_onnx(model)), "candidate")
    details: dict[str, Any] = {
        "model": str(model),
        "precision": "fp32",
        "subset": {"examples": recipe.evaluate.num_examples, "seed": recipe.evaluate.subset_seed},
        "attacks": recipe.evaluate.attacks,
    }
    robustness = {"candidate": candidate}
    base = None
    if baseline_file is not None:
        twin = _twin(baseline_file, dense_torch, "baseline").cpu()
        reference = measure_onnx(recipe, baseline_file, batches, twin, indicators=False, show_progress=show_progress)
        robustness["baseline"] = reference
        reference_measured = inputs.served(measurements(reference, load_onnx(baseline_file)), "baseline")
        measured, base = _timed(recipe, data, model, measured, baseline_file, reference_measured)
        details["baseline_model"] = registry.origin_of(baseline_file)  # a registry URI, never its temp download
    checks = run_checks(recipe.gate, measured, base) + inputs.checks(measured, base)
    verdict = GateVerdict(all(c.passed for c in checks), checks, measured, base, candidate.provider, details)
    verdict.robustness = robustness
    return verdict


def _evaluate_int8_gate(
    recipe: Recipe,
    model: Path,
    data: EvaluationData,
    inputs: GateInputs,
    fp32_file: Path | None,
    fp32_torch: nn.Module | None,
    candidate: Int8Robustness | None,
    reference: OnnxRobustness | None,
    show_progress: bool,
) -> GateVerdict:
    """The gate of an INT8 model: measured against the FP32 model it was quantized from."""
    if fp32_file is None:
        raise QuantizationError(
            f"{model}: an INT8 model is gated against its FP32 model; none found (set gate.int8.baseline, "
            f"or keep {FP32_ONNX} beside it)"
        )
    batches = data.batches
    fp32_twin = _twin(fp32_file, fp32_torch, "baseline").cpu()
    if candidate is None:
        candidate = measure_int8(recipe, model, fp32_file, batches, fp32_twin, show_progress=show_progress)
    if reference is None:  # only its clean, PGD and Square figures are compared: the PGD protocol
        reference = measure_onnx(
            recipe.model_copy(
                update={"evaluate": recipe.evaluate.model_copy(update={"attacks": "pgd", "curve_steps": 0})}
            ),
            fp32_file,
            batches,
            fp32_twin,
            indicators=False,
            show_progress=show_progress,
        )
    measured, base = _timed(
        recipe,
        data,
        model,
        inputs.served(int8_measurements(candidate, load_onnx(model)), "candidate"),
        fp32_file,
        inputs.served(measurements(reference, load_onnx(fp32_file)), "baseline"),
    )
    checks = run_int8_checks(recipe.gate, measured, base, candidate.agreement) + inputs.checks(measured, base)
    details: dict[str, Any] = {
        "model": str(model),
        "precision": "int8",
        "subset": {"examples": recipe.evaluate.num_examples, "seed": recipe.evaluate.subset_seed},
        "attacks": "pgd (straight-through twin and transferred from FP32, worst case per example) + square",
        "baseline_model": registry.origin_of(fp32_file),
        "int8": candidate.to_dict(),
    }
    verdict = GateVerdict(all(c.passed for c in checks), checks, measured, base, candidate.provider, details)
    verdict.robustness = {"baseline": reference}
    return verdict


def _timed(
    recipe: Recipe, data: EvaluationData, model: Path, measured: Measurements, baseline: Path, base: Measurements
) -> tuple[Measurements, Measurements]:
    """``measured`` and ``base`` with their latencies, timed side by side, and the speed-up of
    ``model`` over ``baseline``."""
    lat = recipe.evaluate.latency
    base_lat, cand_lat, speedup = compare_speed(
        OnnxClassifier(baseline, recipe.evaluate.providers),
        OnnxClassifier(model, recipe.evaluate.providers),
        data.input_shape,
        lat.batch,
        lat.warmup,
        lat.repeats,
    )
    return (
        Measurements(**{**measured.to_dict(), "latency_ms": cand_lat.median_ms, "speedup": speedup.to_dict()}),
        Measurements(**{**base.to_dict(), "latency_ms": base_lat.median_ms}),
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _attack_lines(verdict: GateVerdict) -> list[str]:
    lines: list[str] = []
    for label, result in verdict.robustness.items():
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
    result = verdict.robustness.get("candidate")
    if result is None or not result.indicators:
        return []
    enforced = {c.name.split(":", 1)[1] for c in verdict.checks if c.name.startswith("indicator:")}
    lines = [
        "",
        "### Attack-failure indicators (candidate)",
        "",
        "| indicator | measured | limit | enforced | result | how |",
    ]
    lines.append("|---|---:|---:|:---:|:---:|---|")
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
    rows = [(label, r) for label, r in verdict.robustness.items() if r.curve is not None]
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


def render_markdown(verdict: GateVerdict) -> str:
    status = "PASSED" if verdict.passed else "FAILED"
    lines = [
        f"## Robustness gate: {status}",
        "",
        f"Model: `{verdict.details.get('model')}`, declared {verdict.details.get('precision', 'fp32')} "
        f"(onnxruntime provider: {verdict.provider}); "
        f"baseline: `{verdict.details.get('baseline_model', 'none')}`.",
        "",
        "| check | measured | threshold | result | detail |",
        "|---|---:|---:|:---:|---|",
    ]
    for c in verdict.checks:
        measured = "not measured" if c.measured is None else f"{c.measured:.4f}"
        result = "not measurable" if not c.measurable else "pass" if c.passed else "**FAIL**"
        detail = c.detail.replace("|", "\\|")  # a detail such as |a - b| must not split the table's row
        lines.append(f"| {c.name} | {measured} | {c.op} {c.threshold:.4f} | {result} | {detail} |")
    if not verdict.checks:
        lines.append("| (no thresholds configured) | | | pass | |")
    lines += [
        "",
        "| | clean | clean, batch 1 | PGD | Square | AutoAttack |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, m in (("candidate", verdict.candidate), ("baseline", verdict.baseline)):
        if m is not None:
            lines.append(
                f"| {label} | {m.clean_acc:.4f} | {_fmt(m.clean_acc_b1)} | {m.pgd_acc:.4f} | {_fmt(m.square_acc)} | "
                f"{_fmt(m.autoattack_acc)} |"
            )
    lines += _attack_lines(verdict) + _indicator_lines(verdict) + _curve_lines(verdict)
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
    curves = {label: r.curve.distances.tolist() for label, r in verdict.robustness.items() if r.curve is not None}
    eps = next((r.eps for r in verdict.robustness.values() if r.eps is not None), None)
    if curves and eps is not None:
        ensemble = {label: r.autoattack_acc for label, r in verdict.robustness.items()}
        files.append(plot_security_curves(curves, eps, directory / CURVE_PNG, ensemble))
    return files


ALIAS_TAG = "gate.alias."
"""Prefix of a version tag ``gate.alias.<alias>=passed``: the version passed a gate that moved ``<alias>`` to it."""
SHA256_DETAILS = {"model_sha256": SHA256_TAG, "baseline_sha256": BASELINE_SHA256_TAG}
"""``gate.json`` entries recorded as version tags (see :mod:`robprune_deploy.gate.staging`)."""


def promote(verdict: GateVerdict, name: str, version: str, alias: str | None) -> list[dict[str, Any]]:
    """Tag the version with the verdict; move ``alias`` to it only when the gate passed.

    A version that failed keeps no alias: every alias that points at it moves back to the most recent
    other version that passed the gate for that alias (tag ``gate.passed=true`` and
    ``gate.alias.<alias>=passed``), or is removed when there is none.

    :returns: what happened to each alias concerned (``gate.json``'s ``alias``); every move is also
        one line on stderr.
    """
    c = verdict.candidate
    tags = {
        "gate.passed": str(verdict.passed).lower(),
        "gate.failures": ",".join(verdict.failures) or "none",
        "gate.clean_acc": f"{c.clean_acc:.4f}",
        "gate.pgd_acc": f"{c.pgd_acc:.4f}",
        "gate.square_acc": _fmt(c.square_acc),
        "gate.autoattack_acc": _fmt(c.autoattack_acc),
        "precision": str(verdict.details.get("precision", "fp32")),
        **{tag: str(verdict.details[key]) for key, tag in SHA256_DETAILS.items() if verdict.details.get(key)},
    }
    registry.tag_version(name, version, tags)
    if verdict.passed:
        if not alias:
            return []
        previous = registry.alias_version(name, alias)
        registry.set_alias(name, alias, version)
        registry.tag_version(name, version, {f"{ALIAS_TAG}{alias}": "passed"})
        return [_alias_entry(name, alias, previous, version, "the gate passed")]
    held = registry.version_aliases(name, version)
    entries = [_step_back(name, held_alias, version) for held_alias in held]
    if alias and alias not in held:
        stays = registry.alias_version(name, alias)
        entries.append(_alias_entry(name, alias, stays, stays, f"version {version} failed the gate", "kept"))
    return entries


def _step_back(name: str, alias: str, failed: str) -> dict[str, Any]:
    """Move ``alias`` off the ``failed`` version: back to the latest other version that passed for it."""
    target = registry.latest_version_tagged(name, {"gate.passed": "true", f"{ALIAS_TAG}{alias}": "passed"}, failed)
    if target is None:
        registry.delete_alias(name, alias)
        reason = f"version {failed} failed the gate and no other version passed it for this alias"
        return _alias_entry(name, alias, failed, None, reason, "removed")
    registry.set_alias(name, alias, target)
    reason = f"version {failed} failed the gate; version {target} is the latest other version that passed it"
    return _alias_entry(name, alias, failed, target, reason, "moved back")


def _alias_entry(
    name: str, alias: str, previous: str | None, current: str | None, reason: str, action: str = "moved"
) -> dict[str, Any]:
    """The record of one alias change, announced on stderr in one line naming the model, the alias, and
    the version before and after; an alias the gate leaves where it was is said too, so every run
    that registers says where its alias points."""
    if previous == current:
        action = "kept"
        where = f"stays on version {current}" if current else "not set"
    elif current is None:
        where = f"removed from version {previous}"
    else:
        where = f"version {previous} -> version {current}" if previous else f"set on version {current}"
    print(f"alias {alias!r} of {name!r}: {where} ({reason})", file=sys.stderr)
    return {"alias": alias, "action": action, "from": previous, "to": current, "reason": reason}
