"""The release stages: log the models in MLflow and register them, gate each precision against
its reference, and promote a registered version that passes (:data:`~robprune_deploy.pipeline.driver.STAGES`
runs them after the evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robprune_deploy.gate.gating import GateVerdict, baseline_path, declared, evaluate_gate, promote, write_gate_report
from robprune_deploy.pipeline import deploy
from robprune_deploy.pipeline import int8_stage as int8_stages
from robprune_deploy.pipeline.context import RunContext
from robprune_deploy.pipeline.stage_runner import StageBase, StageRecord, Tracking, Values
from robprune_deploy.progress import StageLines, stage_lines
from robprune_deploy.tracking import Tracker
from robprune_deploy.tracking.models import BASELINE_TAG, FP32_TAG

INT8_GATE_DIR = "gate_int8"
"""The INT8 model's gate report (``gate.md``, ``gate.json``, ``gate.png``) inside the output folder."""


class LogModels(StageBase):
    """Log the stripped torch model and the ONNX model; register the ONNX one when the recipe names
    it (hands on its ``version``, or ``None``). They are logged in the pipeline's own run, so its page
    lists the logged and registered models."""

    name = "log models"
    inputs = ("deployable",)
    outputs = ("version",)
    tracking: Tracking = "quiet"
    main_only = True

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        with stage_lines("log models (MLflow)", ctx.show_progress and ctx.recipe.tracking.enabled):
            figures, values["version"] = _log_models(ctx, values["deployable"])
        return StageRecord(self.name, figures)


class Gate(StageBase):
    """The gate on ``model.onnx`` against ``dense.onnx``, reusing the evaluation's measurement; a
    registered version is promoted on a pass. Hands on its ``verdict``."""

    name = "gate"
    inputs = ("deployable", "dense", "robustness", "version")
    outputs = ("verdict",)
    tracking: Tracking = "nested"
    main_only = True

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        model_file = ctx.out_dir / deploy.MODEL_ONNX
        fp32_recipe = declared(ctx.recipe, "fp32")  # the pipeline knows what it exported
        verdict = evaluate_gate(
            fp32_recipe,
            model_file,
            ctx.evaluation_data(),
            torch_model=values["deployable"].cpu(),
            candidate=values["robustness"],
            reference_model=values["dense"].cpu(),
            baseline_file=baseline_path(fp32_recipe, model_file),
            show_progress=ctx.show_progress,
        )
        figures: dict[str, Any] = {}
        if "baseline" in verdict.robustness:
            figures.update(deploy.robustness_summary(verdict.robustness["baseline"], "onnx.dense_"))
        record_verdict(ctx.tracker, verdict, write_gate_report(verdict, ctx.out_dir))
        name, version = ctx.recipe.tracking.registered_model, values["version"]
        if version is not None and name:
            _promote_and_report(ctx, verdict, name, version, ctx.recipe.tracking.alias, ctx.out_dir)
        lines.note(_verdict_figures(verdict))
        values["verdict"] = verdict
        figures.update({"gate.passed": verdict.passed, "gate.failures": verdict.failures})
        return StageRecord(self.name, figures, tags=verdict_tags(verdict))  # the parent's row shows it too


class LogInt8Model(StageBase):
    """Log ``model.int8.onnx`` and register it beside the FP32 version (hands on ``int8_version``)."""

    name = "log int8 model"
    inputs = ("int8_robustness",)
    outputs = ("int8_version",)
    tracking: Tracking = "quiet"
    main_only = True

    def applies(self, ctx: RunContext) -> bool:
        return ctx.recipe.quantize.enabled

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        example = ctx.example_inputs.cpu().numpy()
        uri = ctx.tracker.log_onnx_model(ctx.out_dir / int8_stages.MODEL_INT8_ONNX, example, name="onnx_int8_model")
        figures: dict[str, Any] = {"mlflow.int8_model_uri": uri or ""}
        name, version = ctx.recipe.tracking.registered_model, None
        if uri and name:
            tags = {"algorithm": ctx.recipe.compression.algorithm, "precision": "int8"}
            if ctx.summary.get("mlflow.model_uri"):
                tags[FP32_TAG] = ctx.summary["mlflow.model_uri"]
            version = ctx.tracker.register_model(uri, name, tags)
            figures["mlflow.int8_registered_version"] = version
        values["int8_version"] = version
        return StageRecord(self.name, figures)


class GateInt8(StageBase):
    """The INT8 model's gate against the FP32 model (``robustness``: the FP32 model's measurement
    in this process when there is one, else the gate measures it). Hands on ``int8_verdict``."""

    name = "gate_int8"
    inputs = ("deployable", "int8_robustness", "int8_version")
    outputs = ("int8_verdict",)
    tracking: Tracking = "nested"
    main_only = True

    def applies(self, ctx: RunContext) -> bool:
        return ctx.recipe.quantize.enabled

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        fp32 = values.get("robustness")
        verdict = evaluate_gate(
            declared(ctx.recipe, int8_stages.PRECISION),
            ctx.out_dir / int8_stages.MODEL_INT8_ONNX,
            ctx.evaluation_data(),
            reference_model=values["deployable"].cpu(),
            baseline_file=ctx.out_dir / deploy.MODEL_ONNX,
            candidate=values["int8_robustness"],
            reference=fp32 if ctx.recipe.evaluate.attacks == "pgd" else None,  # else measured with PGD
            show_progress=ctx.show_progress,
        )
        record_verdict(ctx.tracker, verdict, write_gate_report(verdict, ctx.out_dir / INT8_GATE_DIR))
        name, version = ctx.recipe.tracking.registered_model, values["int8_version"]
        if version is not None and name:
            alias = ctx.recipe.tracking.alias
            int8_alias = f"{alias}-int8" if alias else None
            _promote_and_report(ctx, verdict, name, version, int8_alias, ctx.out_dir / INT8_GATE_DIR)
        lines.note(_verdict_figures(verdict))
        values["int8_verdict"] = verdict
        figures = {"int8.gate.passed": verdict.passed, "int8.gate.failures": verdict.failures}
        return StageRecord(self.name, figures, tags={"int8.gate.passed": str(verdict.passed).lower()})


def _promote_and_report(
    ctx: RunContext, verdict: GateVerdict, name: str, version: str, alias: str | None, directory: Path
) -> None:
    """Tag the registered version (alias on a pass, see :func:`promote`), then write the gate's report
    again with the registration and what happened to each alias, and log it again.

    The report without them is already written and logged: a registry that fails here leaves a
    verdict on disk and in the run."""
    verdict.details.update({"registered_model": name, "registered_version": version})
    verdict.details["alias"] = promote(verdict, name, version, alias)
    for file in write_gate_report(verdict, directory):
        ctx.tracker.log_artifact(file, "gate")


def _log_models(ctx: RunContext, deployable: torch.nn.Module) -> tuple[dict[str, Any], str | None]:
    """The ``mlflow.*`` entries of :class:`LogModels`, and the registered version (or ``None``)."""
    figures: dict[str, Any] = {}
    example = ctx.example_inputs.cpu().numpy()
    torch_uri = ctx.tracker.log_torch_model(deployable, example)
    if torch_uri:  # a later run can start from it: model.checkpoint=<this URI>
        figures["mlflow.torch_model_uri"] = torch_uri
    uri = ctx.tracker.log_onnx_model(ctx.out_dir / deploy.MODEL_ONNX, example)
    figures["mlflow.model_uri"] = uri or ""
    # The dense model travels with the pruned one, so a later gate on models:/NAME/V finds its baseline.
    baseline = ctx.tracker.log_file(ctx.out_dir / deploy.DENSE_ONNX, "baseline")
    tags = {"algorithm": ctx.recipe.compression.algorithm}
    if baseline:
        figures["mlflow.baseline_uri"] = baseline
        tags[BASELINE_TAG] = baseline
        ctx.tracker.set_tags({BASELINE_TAG: baseline})
    name = ctx.recipe.tracking.registered_model
    if uri and name:
        version = ctx.tracker.register_model(uri, name, tags)
        figures["mlflow.registered_model"] = name
        figures["mlflow.registered_version"] = version
        return figures, version
    return figures, None


def _verdict_figures(verdict: GateVerdict) -> dict[str, str]:
    """The gate stage's closing progress line."""
    figures = {"verdict": "PASSED" if verdict.passed else "FAILED"}
    return figures | ({"failed": ", ".join(verdict.failures)} if verdict.failures else {})


def verdict_tags(verdict: GateVerdict) -> dict[str, str]:
    return {"gate.passed": str(verdict.passed).lower(), "gate.failures": ",".join(verdict.failures) or "none"}


def record_verdict(tracker: Tracker, verdict: GateVerdict, reports: list[Path]) -> None:
    """The gate's verdict on the active run: tags, one metric per measured check, and the reports
    (``gate/gate.md``, ``gate/gate.json``, ``gate/gate.png``), for a failed gate as for a passed one."""
    tracker.set_tags(verdict_tags(verdict))
    metrics = {"gate_passed": float(verdict.passed)}
    metrics.update({f"gate.{c.name}": c.measured for c in verdict.checks if c.measured is not None})
    tracker.log_metrics(metrics)
    for file in reports:
        tracker.log_artifact(file, "gate")
