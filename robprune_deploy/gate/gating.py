"""``robprune gate``: measure a model on each runtime, check the thresholds, report, promote.

The candidate and its reference (the dense baseline of an FP32 model; the FP32 model an INT8 one was
quantized from) are measured as artifacts (:class:`~robprune_deploy.evaluation.Artifact`) on every
runtime of ``evaluate.runtimes``, under one protocol (:func:`~robprune_deploy.gate.measure.protocol_of`),
and the precision's check table (:func:`~robprune_deploy.gate.checks.check_table`) is applied on each.
With several runtimes the release passes only when every runtime's gate passes; each check is then
named ``<runtime>.<check>``, so a failure names the runtime it failed on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

from torch import nn

from robprune_deploy.errors import QuantizationError, RecipeError
from robprune_deploy.evaluation import Artifact, Robustness, evaluate_artifact
from robprune_deploy.evaluation.latency import compare_speed
from robprune_deploy.export import load_onnx
from robprune_deploy.gate.checks import Measurements, apply_checks, check_table
from robprune_deploy.gate.measure import measurements, protocol_of, twin_of, twins_for
from robprune_deploy.gate.rendering import (
    CURVE_PNG,
    GATE_JSON,
    GATE_MD,
    GATE_PNG,
    _fmt,
    render_markdown,
    write_gate_report,
)
from robprune_deploy.gate.staging import BASELINE_SHA256_TAG, SHA256_TAG
from robprune_deploy.gate.validation import EvaluationData, GateInputs, check_declared_precision, validate_gate_inputs
from robprune_deploy.gate.verdict import GateVerdict, combine
from robprune_deploy.recipe import Precision, Recipe
from robprune_deploy.recipe.schema import NO_BASELINE
from robprune_deploy.tracking import models as registry

__all__ = [  # the report's names are used from here by the pipeline, the CLI and the API
    "CURVE_PNG",
    "GATE_JSON",
    "GATE_MD",
    "GATE_PNG",
    "GateVerdict",
    "render_markdown",
    "write_gate_report",
]
FP32_ONNX = "model.onnx"
"""The FP32 model beside an INT8 one (the pipeline writes ``model.onnx`` and ``model.int8.onnx``)."""


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


def _by_runtime(figures: Robustness | Mapping[str, Robustness] | None) -> dict[str, Robustness]:
    if figures is None:
        return {}
    return {figures.runtime: figures} if isinstance(figures, Robustness) else dict(figures)


def evaluate_gate(
    recipe: Recipe,
    model: Path,
    data: EvaluationData,
    *,
    torch_model: nn.Module | None = None,
    candidate: Robustness | Mapping[str, Robustness] | None = None,
    reference_model: nn.Module | None = None,
    baseline_file: Path | None = None,
    reference: Robustness | Mapping[str, Robustness] | None = None,
    show_progress: bool = True,
) -> GateVerdict:
    """Validate what the gate is given, measure candidate and reference on each runtime, time them
    side by side, and run every configured check plus the integrity checks.

    :param data: the fixed evaluation subset and the classifier interface the data implies.
    :param torch_model: the FP32 candidate's torch model (default: a twin converted from the file).
    :param candidate: the candidate's figures when already measured (the pipeline's evaluate
        stages), by runtime, so they are not measured twice.
    :param baseline_file: the reference ONNX file (see :func:`baseline_path`), or none. For a model
        declared INT8 (``gate.precision``; never guessed from the graph) it is the FP32 model.
    :param reference_model: the reference's torch model (default: converted from its file).
    :param reference: the reference's figures when already measured under the candidate's protocol.
    """
    inputs = validate_gate_inputs(recipe, data)  # bad input is an error before anything is measured
    precision = recipe.gate.precision
    check_declared_precision(load_onnx(model), model, precision)
    if precision != "fp32" and baseline_file is None:
        raise QuantizationError(
            f"{model}: an INT8 model is gated against its FP32 model; none found (set gate.int8.baseline, "
            f"or keep {FP32_ONNX} beside it)"
        )
    providers = tuple(recipe.evaluate.providers)
    runtimes = list(dict.fromkeys(recipe.evaluate.runtimes))
    candidates = {r: Artifact(model, precision, r, providers) for r in runtimes}
    references: dict[str, Artifact] = {}
    if baseline_file is not None:
        references = {r: Artifact(baseline_file, "fp32", r, providers) for r in runtimes}
    for r in runtimes:
        inputs.model(candidates[r], "candidate")
        if r in references:
            inputs.model(references[r], "baseline")
    twins = _Twins(candidates[runtimes[0]], baseline_file, torch_model, reference_model)
    known, known_reference = _by_runtime(candidate), _by_runtime(reference)
    verdicts = {
        r: _gate_on(recipe, data, inputs, candidates[r], references.get(r), known.get(r), known_reference.get(r),
                    twins.of, show_progress)
        for r in runtimes
    }  # fmt: skip
    return combine(verdicts)


@dataclass
class _Twins:
    """The torch models the attacks on the candidate and its reference are crafted on, built once,
    on first need, for every runtime (the torch side does not depend on the runtime)."""

    candidate: Artifact
    reference_file: Path | None
    model: nn.Module | None
    reference_model: nn.Module | None
    built: dict[str, dict[str, nn.Module]] = field(default_factory=dict)

    def of(self, role: str) -> dict[str, nn.Module]:
        if role not in self.built:
            if role == "baseline":
                assert self.reference_file is not None
                model = self.reference_model
                self.built[role] = {"twin": model.cpu() if model is not None else twin_of(self.reference_file, role)}
            else:  # a quantized candidate is attacked by transfer from its reference (FP32) model too
                source = self.of("baseline")["twin"] if self.candidate.precision != "fp32" else None
                self.built[role] = twins_for(self.candidate, self.model, source)
        return self.built[role]


def _gate_on(
    recipe: Recipe,
    data: EvaluationData,
    inputs: GateInputs,
    candidate: Artifact,
    reference: Artifact | None,
    measured: Robustness | None,
    reference_measured: Robustness | None,
    twins_of: Callable[[str], dict[str, nn.Module]],
    show_progress: bool,
) -> GateVerdict:
    """The gate on one runtime: the candidate and its reference measured under one protocol (the
    reference without the indicators), timed side by side, and the precision's check table."""
    protocol = protocol_of(recipe, candidate.precision)
    batches = data.batches
    if measured is None:
        measured = evaluate_artifact(
            candidate, protocol, batches, twins=twins_of("candidate"), reference=reference, show_progress=show_progress
        )
    details: dict[str, Any] = {
        "model": str(candidate.file),
        "precision": candidate.precision,
        "subset": {"examples": recipe.evaluate.num_examples, "seed": recipe.evaluate.subset_seed},
        "attacks": _attacks(protocol.attacks, measured),
    }
    if candidate.precision != "fp32":  # a quantized candidate's figures under its precision's name
        details[candidate.precision] = measured.to_dict()
    figures = inputs.served(measurements(measured, load_onnx(candidate.file)), "candidate", candidate.runtime)
    robustness = {"candidate": measured}
    base = None
    if reference is not None:
        if reference_measured is None:
            reference_measured = evaluate_artifact(
                reference, protocol.without_indicators(), batches, twins=twins_of("baseline"),
                show_progress=show_progress,
            )  # fmt: skip
        robustness["baseline"] = reference_measured
        reference_figures = measurements(reference_measured, load_onnx(reference.file))
        reference_figures = inputs.served(reference_figures, "baseline", reference.runtime)
        figures, base = _timed(recipe, data, candidate, figures, reference, reference_figures)
        details["baseline_model"] = registry.origin_of(reference.file)  # a registry URI, never its temp download
    table = check_table(recipe.gate, candidate.precision)
    checks = apply_checks(table, figures, base) + inputs.checks(figures, base, candidate.runtime)
    passed = all(c.passed for c in checks)
    return GateVerdict(passed, checks, figures, base, measured.provider, details, robustness, candidate.runtime)


def _attacks(protocol: str, measured: Robustness) -> str:
    if len(measured.pgd_sources) > 1:
        return f"{protocol} (PGD from the {' and '.join(measured.pgd_sources)} twins, worst case per example)"
    return protocol


def _timed(
    recipe: Recipe,
    data: EvaluationData,
    candidate: Artifact,
    measured: Measurements,
    reference: Artifact,
    base: Measurements,
) -> tuple[Measurements, Measurements]:
    """``measured`` and ``base`` with their latencies, timed side by side on their runtime, and the
    speed-up of ``candidate`` over ``reference``."""
    lat = recipe.evaluate.latency
    base_lat, cand_lat, speedup = compare_speed(
        reference.open(), candidate.open(), data.input_shape, lat.batch, lat.warmup, lat.repeats
    )
    return (
        replace(measured, latency_ms=cand_lat.median_ms, speedup=speedup.to_dict()),
        replace(base, latency_ms=base_lat.median_ms),
    )


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
