"""The INT8 stage: quantize ``model.onnx`` with NNCF into ``model.int8.onnx``, which is then evaluated
like the FP32 model (:func:`robprune_deploy.pipeline.deploy.evaluate` with ``precision="int8"``)."""

from __future__ import annotations

from typing import Any

import onnx
from torch.utils.data import Subset

from robprune_deploy.data import make_loader, seeded_subset
from robprune_deploy.errors import QuantizationError
from robprune_deploy.export import audit_onnx, load_onnx
from robprune_deploy.pipeline.context import RunContext
from robprune_deploy.pipeline.deploy import MODEL_INT8_ONNX, MODEL_ONNX, is_number
from robprune_deploy.pipeline.run_data import RunData
from robprune_deploy.pipeline.stage_runner import StageBase, StageRecord, Values
from robprune_deploy.progress import StageLines
from robprune_deploy.quantization import calibration_inputs, initializer_types, quantize_onnx
from robprune_deploy.quantization.fake_quant import fold_weight_dequantize
from robprune_deploy.recipe import Precision

__all__ = ["MODEL_INT8_ONNX", "PRECISION", "Quantize", "calibration_batches", "describe_int8"]
PRECISION: Precision = "int8"
"""What this stage makes of ``model.onnx``: the precision its gate declares for ``model.int8.onnx``."""


def calibration_batches(ctx: RunData) -> list[Any]:
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


class Quantize(StageBase):
    """With ``quantize.enabled``: write ``model.int8.onnx`` from the exported ``model.onnx`` and count
    what the graph holds (always afresh: ``robprune quantize`` tries other settings on a finished folder)."""

    name = "quantize"
    main_only = True

    def applies(self, ctx: RunContext) -> bool:
        return ctx.recipe.quantize.enabled

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        section = ctx.recipe.quantize
        source, target = ctx.out_dir / MODEL_ONNX, ctx.out_dir / MODEL_INT8_ONNX
        if "export" not in ctx.state.completed() or not source.is_file():
            raise QuantizationError(f"{ctx.out_dir}: no exported {MODEL_ONNX} to quantize; run `robprune export` first")
        calibration = calibration_inputs(calibration_batches(ctx), section.calibration_size)
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
        return StageRecord(self.name, info)


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
