"""What the gate measures on any artifact: the recipe's evaluation protocol, built in one place.

The pipeline's evaluate stages and ``robprune gate`` both measure through :func:`measure`, so a
model evaluated in a run and the same file gated later get the same numbers. What depends on the
declared precision is said here once: a quantized model is attacked with the PGD protocol (no
AutoAttack, no curve), from its straight-through twin and, transferred, from its FP32 model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from robprune_deploy.errors import OnnxModelError
from robprune_deploy.evaluation import Artifact, EvaluationProtocol, Robustness, evaluate_artifact
from robprune_deploy.evaluation.ensemble import EnsembleBudget
from robprune_deploy.evaluation.threat_evaluation import CorruptionPlan, ThreatPlan
from robprune_deploy.evaluation.twin import torch_twin
from robprune_deploy.export import audit_onnx, load_onnx
from robprune_deploy.gate.checks import NOT_MEASURED, Measurements, indicator_limits
from robprune_deploy.quantization.fake_quant import fold_weight_dequantize
from robprune_deploy.quantization.onnx_int8 import QDQ_OPS
from robprune_deploy.recipe import EvaluateSection, Recipe

OUTCOME_FIGURES = {"clean": "clean_acc", "pgd": "pgd_acc", "square": "square_acc", "autoattack": "autoattack_acc"}
"""The gate's figure for each per-example outcome a robustness record keeps."""
Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


def ensemble_budget(evaluate: EvaluateSection) -> EnsembleBudget:
    """The budget of the recipe's AutoAttack version, with the section's overrides."""
    version = "autoattack-fast" if evaluate.attacks == "pgd" else evaluate.attacks
    return EnsembleBudget.of(
        version,
        apgd_steps=evaluate.apgd_steps,
        apgd_targets=evaluate.apgd_targets,
        fab_targets=evaluate.fab_targets,
        square_queries=evaluate.square_queries,
        square_p_init=evaluate.square_p_init,
    )


def threat_plans(evaluate: EvaluateSection) -> tuple[ThreatPlan, ...]:
    """``evaluate.threats`` as the protocol takes them."""
    return tuple(ThreatPlan(entry.description(), entry.examples) for entry in evaluate.threats)


def corruption_plan(evaluate: EvaluateSection) -> CorruptionPlan | None:
    """``evaluate.corruptions`` as the protocol takes it (``None``: not measured)."""
    c = evaluate.corruptions
    return None if c is None else CorruptionPlan(tuple(c.types), tuple(c.severities), c.examples, c.seed)


def protocol_of(recipe: Recipe, precision: str = "fp32", *, indicators: bool = True) -> EvaluationProtocol:
    """The recipe's evaluation protocol for an artifact declared ``precision``.

    A precision whose :data:`~robprune_deploy.gate.checks.NOT_MEASURED` leaves AutoAttack out (INT8:
    through its straight-through twin alone, rounding can mask gradients and overstate robustness;
    the per-example worst case with PGD transferred from FP32 is what the gate trusts) gets the PGD
    protocol without the security curve. Every precision gets the recipe's extra threats (their
    white-box attacks crafted on each twin, as PGD is) and corruptions.

    :param indicators: measure the attack-failure indicators (for the shipped model; a reference
        only needs its accuracies and security curve).
    """
    ev, attack = recipe.evaluate, recipe.attack
    not_measured = NOT_MEASURED.get(precision, {})
    without_ensemble = "autoattack_acc" in not_measured
    return EvaluationProtocol(
        threat=attack.threat(attack.eval_steps),
        attacks="pgd" if without_ensemble else ev.attacks,
        budget=ensemble_budget(ev),
        square_queries=ev.pgd_square_queries,
        square_p_init=ev.square_p_init,
        square_examples=ev.square_examples,
        ensemble_examples=ev.ensemble_examples,
        seed=ev.subset_seed,
        curve_steps=0 if without_ensemble else ev.curve_steps,
        curve_examples=ev.curve_examples,
        indicator_examples=ev.indicator_examples if indicators else 0,
        indicator_limits=indicator_limits(recipe.gate),
        batch_size=recipe.data.eval_batch_size,
        not_measured=not_measured,
        threats=threat_plans(ev),
        corruptions=corruption_plan(ev),
    )


def twin_of(file: Path, role: str = "candidate") -> nn.Module:
    """The torch twin converted from ``file`` (straight-through for a QDQ graph), on the CPU.

    :raises OnnxModelError: naming the file and ``role``; for a graph with QDQ nodes, saying how
        an INT8 model is gated.
    """
    proto = load_onnx(file)
    try:
        return torch_twin(proto, f"{role} {file}").cpu()
    except OnnxModelError as exc:
        hint = (
            "; an INT8 model is gated with --precision int8 (gate.precision: int8)"
            if any(n.op_type in QDQ_OPS for n in proto.graph.node)
            else ""
        )
        raise OnnxModelError(f"{exc}{hint}") from None


def twins_for(artifact: Artifact, model: nn.Module | None, reference_model: nn.Module | None) -> dict[str, nn.Module]:
    """The torch models white-box attacks on ``artifact`` are crafted on, its own twin first.

    FP32: ``model`` itself (the torch model the file was exported from), else converted from the
    file. A quantized artifact: its straight-through twin, and its FP32 ``reference_model`` for PGD
    transferred from it (worst case per example).
    """
    if artifact.precision == "fp32":
        return {"twin": model if model is not None else twin_of(artifact.file)}
    twins = {"ste": twin_of(artifact.file)}
    if reference_model is not None:
        twins["transfer"] = reference_model
    return twins


def measure(
    recipe: Recipe,
    artifact: Artifact,
    batches: Batches,
    twins: dict[str, nn.Module],
    *,
    reference: Artifact | None = None,
    indicators: bool = True,
    show_progress: bool = True,
) -> Robustness:
    """:func:`~robprune_deploy.evaluation.evaluate_artifact` of ``artifact`` under the recipe's
    protocol for its precision (see :func:`protocol_of` and :func:`twins_for`)."""
    protocol = protocol_of(recipe, artifact.precision, indicators=indicators)
    return evaluate_artifact(artifact, protocol, batches, twins=twins, reference=reference, show_progress=show_progress)


def sparsity_audit(proto: onnx.ModelProto) -> tuple[float, float | None]:
    """``audit_sparsity`` measured from the graph (integer weights dequantized first, whatever the
    declared precision: folding touches only DequantizeLinear nodes of constants) and the
    ``claimed_sparsity`` of its metadata."""
    audit = audit_onnx(fold_weight_dequantize(proto))
    meta = {p.key: p.value for p in proto.metadata_props}
    claimed = float(meta["robprune.claimed_sparsity"]) if "robprune.claimed_sparsity" in meta else None
    audit_sparsity = audit.zero_fraction
    if meta.get("robprune.granularity") == "channel" and "robprune.dense_weight_params" in meta:
        audit_sparsity = 1 - audit.weight_params / int(meta["robprune.dense_weight_params"])
    return audit_sparsity, claimed


def threat_figures(result: Robustness) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:
    """The named figures of the extra threats and corruptions in ``result``, and their per-example
    outcomes: ``threat:<label>`` (accuracy, worst case over the threat's attacks),
    ``threat:<label>.median_distance`` (FMN's, when it ran), ``corruption_acc`` (mean over the
    cells, outcomes ``N x k``) and ``corruption:<type>`` (each type's accuracy over its severities)."""
    figures: dict[str, float | None] = {}
    outcomes: dict[str, np.ndarray] = {}
    for label, threat in result.threats.items():
        figures[f"threat:{label}"] = threat.accuracy
        outcomes[f"threat:{label}"] = threat.robust
        if threat.median_distance is not None:
            figures[f"threat:{label}.median_distance"] = threat.median_distance
    if result.corruptions is not None:
        figures["corruption_acc"] = result.corruptions.mean_accuracy
        figures.update({f"corruption:{t}": acc for t, acc in result.corruptions.type_accuracy.items()})
        outcomes["corruption_acc"] = result.outcomes["corruption_acc"]
    return figures, outcomes


def measurements(result: Robustness, proto: onnx.ModelProto) -> Measurements:
    """The gate's view of ``result`` (``pgd_acc``: the worst case over its twins), with the graph
    audit of ``proto`` against its claimed sparsity (pruned channels and zeros survive quantization)."""
    audit_sparsity, claimed = sparsity_audit(proto)
    figures, outcomes = threat_figures(result)
    return Measurements(
        clean_acc=result.clean_acc,
        pgd_acc=result.pgd_acc if result.pgd_acc is not None else float("nan"),
        square_acc=result.square_acc,
        autoattack_acc=result.autoattack_acc,
        max_abs_diff=result.max_abs_diff,
        audit_sparsity=audit_sparsity,
        claimed_sparsity=claimed,
        indicators={name: indicator.value for name, indicator in result.indicators.items()},
        indicator_limits={name: indicator.limit for name, indicator in result.indicators.items()},
        median_linf_distance=result.median_linf_distance,
        agreement=result.agreement,
        figures=figures,
        outcomes={
            **{OUTCOME_FIGURES[name]: values for name, values in result.outcomes.items() if name in OUTCOME_FIGURES},
            **outcomes,
        },
    )
