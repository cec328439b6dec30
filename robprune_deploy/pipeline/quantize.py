"""The INT8 stages: quantize ``model.onnx`` with NNCF, then evaluate the INT8 model like the FP32 one."""

from __future__ import annotations

from typing import Any

import onnx
from torch import nn
from torch.utils.data import Subset

from robprune_deploy.data import make_loader, seeded_subset
from robprune_deploy.errors import QuantizationError
from robprune_deploy.evaluation import OnnxClassifier
from robprune_deploy.evaluation.latency import compare_speed
from robprune_deploy.evaluation.quantized import Int8Robustness
from robprune_deploy.export import audit_onnx, load_onnx
from robprune_deploy.gate.measure import measure_int8
from robprune_deploy.pipeline.context import RunContext
from robprune_deploy.pipeline.deploy import DENSE_ONNX, MODEL_ONNX, is_number
from robprune_deploy.quantization import calibration_inputs, initializer_types, quantize_onnx
from robprune_deploy.quantization.fake_quant import fold_weight_dequantize
from robprune_deploy.recipe import Precision

MODEL_INT8_ONNX = "model.int8.onnx"
PRECISION: Precision = "int8"
"""What this stage makes of ``model.onnx``: the precision its gate declares for ``model.int8.onnx``."""


def calibration_batches(ctx: RunContext) -> list[Any]:
    """``quantize.calibration_size`` training images (the run's training split, without augmentation),
    a fixed seeded subset.

    :raises QuantizationError: when the training split holds fewer images.
    """
    size = ctx.recipe.quantize.calibration_size
    train_idx, val_idx = ctx.split_indices
    source = Subset(ctx.data.unaugmented_train, train_idx) if val_idx else ctx.data.unaugmented_train
    source = seeded_subset(source, ctx.recipe.data.train_subset, ctx.recipe.seed)
    if size > len(source):  # type: ignore[arg-type]
        raise QuantizationError(
            f"quantize.calibration_size: {size} calibration images asked for, the training split holds {len(source)}"  # type: ignore[arg-type]
        )
    return list(
        make_loader(seeded_subset(source, size, ctx.recipe.seed), ctx.recipe.data.eval_batch_size, shuffle=False)
    )


def quantize(ctx: RunContext) -> dict[str, Any]:
    """Write ``model.int8.onnx`` from the exported ``model.onnx`` and count what the graph holds."""
    section = ctx.recipe.quantize
    source, target = ctx.out_dir / MODEL_ONNX, ctx.out_dir / MODEL_INT8_ONNX
    if "export" not in ctx.completed() or not source.is_file():
        raise QuantizationError(f"{ctx.out_dir}: no exported {MODEL_ONNX} to quantize; run `robprune export` first")
    calibration = calibration_inputs(calibration_batches(ctx), section.calibration_size)
    with ctx.stage("quantize") as lines:
        quantize_onnx(
            source,
            target,
            calibration,
            preset=section.preset,
            ignored_scope=section.ignored_scope.to_nncf() if _has_scope(section.ignored_scope) else None,
            fast_bias_correction=section.fast_bias_correction,
        )
        info = describe_int8(load_onnx(target), load_onnx(source))
        info.update({"int8.preset": section.preset, "int8.calibration_size": section.calibration_size})
        ctx.tracker.log_params(section.model_dump(mode="json"))
        ctx.tracker.log_metrics({k.replace("int8.", "int8_"): float(v) for k, v in info.items() if is_number(v)})
        lines.note({k: v for k, v in info.items() if k != "int8.preset"})
        ctx.mark_done("quantize", info)
    return info


def _has_scope(scope: Any) -> bool:
    return bool(scope.names or scope.patterns or scope.types)


def describe_int8(int8: onnx.ModelProto, fp32: onnx.ModelProto) -> dict[str, Any]:
    """What the INT8 graph holds: integer weight initializers, QDQ nodes, and whether its (dequantized)
    layers keep the FP32 model's output channels and weight counts."""
    types = initializer_types(int8)
    ops = [n.op_type for n in int8.graph.node]
    audit, reference = audit_onnx(fold_weight_dequantize(int8)), audit_onnx(fp32)
    return {
        "int8.int8_initializers": types.get("INT8", 0),
        "int8.uint8_initializers": types.get("UINT8", 0),
        "int8.float_initializers": types.get("FLOAT", 0),
        "int8.quantize_nodes": ops.count("QuantizeLinear"),
        "int8.dequantize_nodes": ops.count("DequantizeLinear"),
        "int8.weight_params": audit.weight_params,
        "int8.same_channels": sorted(audit.conv_out_channels.values()) == sorted(reference.conv_out_channels.values()),
    }


def evaluate(ctx: RunContext, deployable: nn.Module, fp32: dict[str, Any]) -> tuple[dict[str, Any], Int8Robustness]:
    """Robustness of ``model.int8.onnx`` on the evaluation subset and latency INT8 vs FP32 pruned vs
    FP32 dense at batch 1 and ``evaluate.latency.batch``.

    :param fp32: the FP32 model's summary entries (``onnx.*``), for the drops.
    """
    with ctx.stage("evaluate_int8") as lines:
        result = measure_int8(
            ctx.recipe,
            ctx.out_dir / MODEL_INT8_ONNX,
            ctx.out_dir / MODEL_ONNX,
            ctx.eval_subset_batches(),
            deployable.cpu(),
            show_progress=ctx.show_progress,
        )
        deployable.to(ctx.device)
        summary = int8_summary(result, fp32)
        summary.update(latency(ctx))
        ctx.tracker.log_metrics({k.replace("int8.", "int8_"): float(v) for k, v in summary.items() if is_number(v)})
        lines.note({k: summary[k] for k in ("int8.clean_acc", "int8.pgd_acc", "int8.agreement") if k in summary})
        ctx.mark_done("evaluate_int8", summary)
    return summary, result


def int8_summary(result: Int8Robustness, fp32: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "int8.clean_acc": result.clean_acc,
        "int8.pgd_acc": result.pgd_acc,
        "int8.ste_pgd_acc": result.ste_pgd_acc,
        "int8.transfer_pgd_acc": result.transfer_pgd_acc,
        "int8.square_acc": result.square_acc,
        "int8.square_examples": result.square_examples,
        "int8.agreement": result.agreement,
        "int8.max_abs_diff": result.max_abs_diff,
        "int8.twin_agreement": result.twin_agreement,
        "int8.provider": result.provider,
        "int8.examples": result.examples,
    }
    # Square is comparable only when the FP32 model's was an independent run (the PGD protocol); in an
    # ensemble it attacks only what the members before it left.
    compared = ("clean_acc", "pgd_acc", "square_acc") if fp32.get("onnx.attacks") == "pgd" else ("clean_acc", "pgd_acc")
    for key in compared:
        int8, reference = summary[f"int8.{key}"], fp32.get(f"onnx.{key}")
        if is_number(int8) and is_number(reference):
            summary[f"int8.{key.replace('_acc', '_drop')}"] = reference - int8
    summary.update({f"int8.indicators.{name}": ind.value for name, ind in result.indicators.items()})
    return summary


def latency(ctx: RunContext) -> dict[str, Any]:
    """INT8 against FP32 pruned and against FP32 dense, each pair timed interleaved."""
    lat = ctx.recipe.evaluate.latency
    shape = tuple(ctx.example_inputs.shape[1:])
    providers = ctx.recipe.evaluate.providers
    int8 = OnnxClassifier(ctx.out_dir / MODEL_INT8_ONNX, providers)
    result: dict[str, Any] = {"int8.latency.batch": lat.batch}
    fp32_models = {
        name: OnnxClassifier(ctx.out_dir / file, providers)
        for name, file in (("pruned", MODEL_ONNX), ("dense", DENSE_ONNX))
    }
    for batch, key in ((lat.batch, ""), (1, "_b1")):
        for name, fp32 in fp32_models.items():
            base, quantized, speedup = compare_speed(fp32, int8, shape, batch, lat.warmup, lat.repeats)
            result[f"int8.latency.{name}{key}_ms"] = base.median_ms
            result[f"int8.latency.int8_vs_{name}{key}_ms"] = quantized.median_ms
            result[f"int8.latency.speedup_vs_{name}{key}"] = speedup.ratio
            result[f"int8.latency.speedup_vs_{name}{key}_low"] = speedup.low
            result[f"int8.latency.speedup_vs_{name}{key}_high"] = speedup.high
    return result
