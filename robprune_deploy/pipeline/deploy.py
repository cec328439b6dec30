"""The deployment stages: export (ONNX + audit) and evaluate (onnxruntime robustness, latency)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import nn

from robprune_deploy.algorithms import Granularity, PruningResult
from robprune_deploy.atomic import write_json
from robprune_deploy.errors import OnnxModelError
from robprune_deploy.evaluation import OnnxClassifier, OnnxRobustness
from robprune_deploy.evaluation.latency import compare_speed
from robprune_deploy.evaluation.outcomes import OUTCOMES_FILE, outcome_record
from robprune_deploy.export import audit_onnx, export_onnx, load_onnx, torch_weight_params
from robprune_deploy.export.onnx_export import onnx_opset
from robprune_deploy.gate.measure import measure_onnx
from robprune_deploy.pipeline.context import RunContext

MODEL_ONNX = "model.onnx"
DENSE_ONNX = "dense.onnx"


def claimed_metadata(result: PruningResult, deployable: nn.Module, dense: nn.Module) -> dict[str, str]:
    """What the pipeline claims about the model, stored in the ONNX file for the gate's audit.

    The claim is computed from the torch model: the zero fraction of its Conv/Linear weights
    (unstructured) or the fraction of those weights physically removed (channel).
    """
    weights = [m.weight for m in deployable.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    kept, dense_params = torch_weight_params(deployable), torch_weight_params(dense)
    if result.granularity is Granularity.UNSTRUCTURED:
        claimed = sum(int((w == 0).sum()) for w in weights) / max(kept, 1)
    else:
        claimed = 1 - kept / max(dense_params, 1)
    return {
        "robprune.algorithm": result.algorithm,
        "robprune.granularity": result.granularity.value,
        "robprune.target_ratio": f"{result.ratio}",
        "robprune.weight_params": str(kept),
        "robprune.dense_weight_params": str(dense_params),
        "robprune.claimed_sparsity": f"{claimed:.8f}",
    }


def export(ctx: RunContext, deployable: nn.Module, dense: nn.Module, result: PruningResult) -> dict[str, Any]:
    """Write ``model.onnx`` and ``dense.onnx`` and check the graph against the torch model."""
    opset, dynamic = ctx.recipe.export.opset, ctx.recipe.export.dynamic_batch
    example = ctx.example_inputs
    with ctx.stage("export") as lines:
        pruned_path = export_onnx(
            deployable,
            ctx.out_dir / MODEL_ONNX,
            example,
            opset=opset,
            dynamic_batch=dynamic,
            metadata=claimed_metadata(result, deployable, dense),
        )
        export_onnx(
            dense,
            ctx.out_dir / DENSE_ONNX,
            example,
            opset=opset,
            dynamic_batch=dynamic,
            metadata={"robprune.algorithm": "dense"},
        )
        pruned_proto = load_onnx(pruned_path)
        audit = audit_onnx(pruned_proto)
        dense_audit = audit_onnx(load_onnx(ctx.out_dir / DENSE_ONNX))
        expected = torch_weight_params(deployable)
        if audit.weight_params != expected:
            raise OnnxModelError(
                f"{pruned_path}: audit found {audit.weight_params} Conv/Gemm weights, the torch model has {expected}"
            )
        info = {
            "onnx.weight_params": audit.weight_params,
            "onnx.macs": audit.macs,
            "onnx.zero_fraction": audit.zero_fraction,
            "onnx.dense_weight_params": dense_audit.weight_params,
            "onnx.dense_macs": dense_audit.macs,
            "onnx.opset": onnx_opset(pruned_proto) or 0,  # read from the file: what was asked is what it has
        }
        ctx.tracker.log_params({"opset": opset, "dynamic_batch": dynamic})
        ctx.tracker.log_metrics({k.replace("onnx.", "audit_"): float(v) for k, v in info.items()})
        lines.note(
            {k: info[k] for k in ("onnx.weight_params", "onnx.dense_weight_params", "onnx.macs", "onnx.dense_macs")}
        )
        ctx.mark_done("export", info)
    return info


def robustness_summary(result: OnnxRobustness, prefix: str = "onnx.") -> dict[str, Any]:
    """``summary.json`` entries for one model's robustness (``onnx.*`` for the shipped model, with its
    indicators as ``indicators.*``; ``onnx.dense_*`` for the dense baseline)."""
    summary: dict[str, Any] = {
        f"{prefix}clean_acc": result.clean_acc,
        f"{prefix}pgd_acc": result.pgd_acc,
        f"{prefix}square_acc": result.square_acc,
        f"{prefix}autoattack_acc": result.autoattack_acc,
        f"{prefix}whitebox_acc": result.whitebox_acc,
        f"{prefix}attacks": result.attacks,
        f"{prefix}attack_budget": result.budget,
        f"{prefix}median_linf_distance": result.median_linf_distance,
        f"{prefix}curve_acc_at_eps": result.curve_acc_at_eps,
        f"{prefix}fmn_acc_at_eps": result.fmn_acc_at_eps,
        f"{prefix}max_abs_diff": result.max_abs_diff,
        f"{prefix}argmax_agreement": result.argmax_agreement,
        f"{prefix}provider": result.provider,
        f"{prefix}examples": result.examples,
        f"{prefix}autoattack_examples": result.square_examples if result.autoattack_acc is not None else None,
    }
    for member in result.members:
        key = member["name"].replace("-", "_")
        summary[f"{prefix}{key}_acc"] = member["accuracy_after"]
        summary[f"{prefix}{key}_seconds"] = member["seconds"]
    if prefix == "onnx.":
        summary.update({f"indicators.{name}": ind.value for name, ind in result.indicators.items()})
    return summary


def evaluate(ctx: RunContext, deployable: nn.Module) -> tuple[dict[str, Any], OnnxRobustness]:
    """Robustness of ``model.onnx`` under onnxruntime and latency of dense vs pruned ONNX; the
    per-example outcomes go to ``outcomes.json`` (:mod:`robprune_deploy.evaluation.outcomes`).

    :returns: the summary entries and the full measurement (the gate reuses it).
    """
    with ctx.stage("evaluate") as lines:
        batches = ctx.eval_subset_batches()
        robustness = measure_onnx(
            ctx.recipe, ctx.out_dir / MODEL_ONNX, batches, deployable.cpu(), show_progress=ctx.show_progress
        )
        deployable.to(ctx.device)
        context = {
            "split": ctx.eval_split,
            "subset_seed": ctx.recipe.evaluate.subset_seed,
            "pgd_steps": ctx.recipe.attack.eval_steps,
        }
        outcomes = write_json(ctx.out_dir / OUTCOMES_FILE, outcome_record(robustness, batches, **context))
        ctx.tracker.log_artifact(outcomes)
        summary = robustness_summary(robustness)
        summary.update(latency(ctx, ctx.out_dir / DENSE_ONNX, ctx.out_dir / MODEL_ONNX))
        ctx.tracker.log_metrics({k: float(v) for k, v in summary.items() if is_number(v)})
        keys = ("onnx.clean_acc", "onnx.pgd_acc", "onnx.autoattack_acc", "onnx.square_acc", "latency.speedup")
        lines.note({k: summary[k] for k in keys if summary.get(k) is not None})
        ctx.mark_done("evaluate", summary)
    return summary, robustness


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def latency(ctx: RunContext, dense_path: Path, pruned_path: Path) -> dict[str, Any]:
    """Median/p90 latency of both ONNX files under the same session options, batch 1 and recipe batch."""
    lat = ctx.recipe.evaluate.latency
    shape = tuple(ctx.example_inputs.shape[1:])
    dense = OnnxClassifier(dense_path, ctx.recipe.evaluate.providers)
    pruned = OnnxClassifier(pruned_path, ctx.recipe.evaluate.providers)
    result: dict[str, Any] = {"latency.batch": lat.batch, "latency.provider": pruned.provider}
    for batch, key in ((lat.batch, ""), (1, "_b1")):
        d, p, speedup = compare_speed(dense, pruned, shape, batch, lat.warmup, lat.repeats)
        result[f"latency.dense{key}_ms"] = d.median_ms
        result[f"latency.pruned{key}_ms"] = p.median_ms
        result[f"latency.dense{key}_p90_ms"] = d.p90_ms
        result[f"latency.pruned{key}_p90_ms"] = p.p90_ms
        result[f"latency.dense{key}_iqr_ms"] = d.iqr_ms
        result[f"latency.pruned{key}_iqr_ms"] = p.iqr_ms
        result[f"latency.speedup{key}"] = speedup.ratio
        result[f"latency.speedup{key}_low"] = speedup.low
        result[f"latency.speedup{key}_high"] = speedup.high
        result[f"latency.speedup{key}_measurable"] = speedup.measurable
    return result
