"""What the gate measures on one ONNX file, with the recipe's threat model and attack protocol.

The pipeline's evaluate stage and ``robprune gate`` both measure through :func:`measure_onnx`, so a
model evaluated in a run and the same file gated later get the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from robprune_deploy.evaluation import OnnxRobustness, evaluate_onnx
from robprune_deploy.evaluation.ensemble import EnsembleBudget
from robprune_deploy.evaluation.quantized import Int8Robustness, evaluate_int8
from robprune_deploy.export import audit_onnx
from robprune_deploy.gate.checks import Measurements
from robprune_deploy.quantization.fake_quant import fold_weight_dequantize
from robprune_deploy.recipe import EvaluateSection, Recipe

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


def measure_onnx(
    recipe: Recipe,
    path: Path,
    batches: Batches,
    twin: nn.Module,
    *,
    indicators: bool = True,
    show_progress: bool = True,
) -> OnnxRobustness:
    """:func:`evaluate_onnx` of ``path`` under the recipe's threat, attacks, budgets and subset.

    :param indicators: measure the attack-failure indicators (for the shipped model; a baseline
        only needs its accuracies and security curve).
    """
    ev = recipe.evaluate
    return evaluate_onnx(
        path,
        batches,
        torch_model=twin,
        **_shared_settings(recipe),
        attacks=ev.attacks,
        budget=ensemble_budget(ev),
        curve_steps=ev.curve_steps,
        curve_examples=ev.curve_examples,
        indicator_examples=ev.indicator_examples if indicators else 0,
        show_progress=show_progress,
        ensemble_examples=ev.ensemble_examples,
    )


def measure_int8(
    recipe: Recipe,
    path: Path,
    fp32_path: Path,
    batches: Batches,
    fp32_twin: nn.Module | None,
    *,
    show_progress: bool = True,
) -> Int8Robustness:
    """:func:`~robprune_deploy.evaluation.quantized.evaluate_int8` of ``path`` against its FP32 model
    ``fp32_path``, with the recipe's threat, subset, Square budget (PGD protocol) and indicators."""
    ev = recipe.evaluate
    return evaluate_int8(
        path,
        fp32_path,
        batches,
        fp32_twin=fp32_twin,
        **_shared_settings(recipe),
        indicator_examples=ev.indicator_examples,
        indicator_steps=ensemble_budget(ev).apgd_steps,
        show_progress=show_progress,
    )


def _shared_settings(recipe: Recipe) -> dict[str, Any]:
    """What every evaluation takes from the recipe: threat, providers, Square (PGD protocol), subset
    seed, indicator limits and batch size."""
    ev, attack = recipe.evaluate, recipe.attack
    return {
        "threat": attack.threat(attack.eval_steps),
        "providers": ev.providers,
        "square_queries": ev.pgd_square_queries,
        "square_p_init": ev.square_p_init,
        "square_examples": ev.square_examples,
        "seed": ev.subset_seed,
        "indicator_limits": indicator_limits(recipe),
        "batch_size": recipe.data.eval_batch_size,
    }


def int8_measurements(result: Int8Robustness, proto: onnx.ModelProto) -> Measurements:
    """The gate's view of an INT8 model: worst-case white-box accuracy as ``pgd_acc``, the audit of
    its dequantized weights (pruned channels and zeros survive quantization) against the claim."""
    audit_sparsity, claimed = sparsity_audit(proto)
    return Measurements(
        clean_acc=result.clean_acc,
        pgd_acc=result.pgd_acc if result.pgd_acc is not None else float("nan"),
        square_acc=result.square_acc,
        max_abs_diff=result.max_abs_diff,
        audit_sparsity=audit_sparsity,
        claimed_sparsity=claimed,
        indicators={name: indicator.value for name, indicator in result.indicators.items()},
        indicator_limits={name: indicator.limit for name, indicator in result.indicators.items()},
    )


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


def indicator_limits(recipe: Recipe) -> dict[str, float]:
    """``gate.indicator_limits`` over the defaults; ``gate.max_square_below_pgd`` is the black-box limit."""
    limits = (
        {}
        if recipe.gate.max_square_below_pgd is None
        else {"blackbox_beats_whitebox": recipe.gate.max_square_below_pgd}
    )
    limits.update({str(name): value for name, value in recipe.gate.indicator_limits.items()})
    return limits


def measurements(result: OnnxRobustness, proto: onnx.ModelProto) -> Measurements:
    """The gate's view of ``result``, with the graph audit of ``proto`` against its claimed sparsity."""
    audit_sparsity, claimed = sparsity_audit(proto)
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
    )
