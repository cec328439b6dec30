"""``robprune run``: the whole pipeline of a recipe, :data:`STAGES` one after another, in one MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from robprune_deploy.atomic import write_json, write_text
from robprune_deploy.gate.gating import (
    GateVerdict,
    baseline_path,
    declared,
    evaluate_gate,
    promote,
    write_gate_report,
)
from robprune_deploy.pipeline import deploy, stages
from robprune_deploy.pipeline import int8_stage as int8_stages
from robprune_deploy.pipeline.context import RunContext
from robprune_deploy.pipeline.ownership import owned_output
from robprune_deploy.pipeline.run_report import write_report
from robprune_deploy.pipeline.stage_runner import PipelineRunner, Stage, StageBase, StageRecord, Tracking, Values
from robprune_deploy.progress import StageLines, stage_lines
from robprune_deploy.recipe import Recipe, recipe_to_dict
from robprune_deploy.reporting import plot_layers, plot_training
from robprune_deploy.tracking import Tracker
from robprune_deploy.tracking.models import BASELINE_TAG, FP32_TAG
from robprune_deploy.tracking.uris import localize_checkpoint

SUMMARY = "summary.json"
REPORT = "report.md"
RESOLVED_RECIPE = "recipe.yaml"
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


INT8_STAGES: tuple[Stage, ...] = (int8_stages.Quantize(), deploy.Evaluate("int8"), LogInt8Model(), GateInt8())
"""What ``robprune run`` does with ``quantize.enabled`` after the FP32 gate, and ``robprune quantize``
on a finished folder."""

STAGES: tuple[Stage, ...] = (
    stages.Pretrain(),
    stages.Prune(),
    stages.Finetune(),
    stages.Compression(),
    stages.MeasureTorch(),
    stages.Splits(),
    deploy.Export(),
    deploy.Evaluate("fp32"),
    LogModels(),
    Gate(),
    *INT8_STAGES,
)
"""The pipeline: the order its stages run in, and the order ``--resume`` restores them in (a stage
run again makes those after it incomplete)."""


def run_pipeline(ctx: RunContext) -> dict[str, Any]:
    """Every stage of :data:`STAGES`: pretrain -> prune -> finetune -> export -> evaluate -> gate
    (-> quantize -> evaluate_int8 -> gate_int8).

    Writes ``summary.json``, ``report.md``, ``model.onnx``, ``dense.onnx`` and plots into the output
    folder and records everything in one parent MLflow run with a nested run per stage. The folder
    is claimed first (:func:`~robprune_deploy.pipeline.ownership.owned_output`): inputs are checked,
    a folder of another recipe is refused, and the folder is locked while the run works in it.
    """
    recipe = ctx.recipe
    origin = localize_checkpoint(recipe)  # a models:/ or runs:/ checkpoint becomes a local file
    if origin:
        ctx.summary["mlflow.checkpoint_uri"] = origin
    with owned_output(ctx, fresh=not ctx.resume):
        _run_tracked(ctx)
    return ctx.summary


def _run_tracked(ctx: RunContext) -> None:
    recipe = ctx.recipe
    document = recipe_to_dict(recipe)
    if "mlflow.checkpoint_uri" in ctx.summary:  # log the URI the user gave, not the download folder
        document["model"]["checkpoint"] = ctx.summary["mlflow.checkpoint_uri"]
    tags = {
        "algorithm": recipe.compression.algorithm,
        "target_ratio": str(recipe.compression.ratio),
        "dataset": recipe.data.name,
        "model": recipe.model.name,
        "granularity": str(recipe.compression.config.get("granularity", "")),
        "robprune.out_dir": str(ctx.out_dir.resolve()),
    }
    if ctx.resume and ctx.is_main:
        ctx.tracker.close_interrupted(str(ctx.out_dir.resolve()))
    name = f"{recipe.compression.algorithm}-{recipe.model.name}-{recipe.data.name}"
    with ctx.tracker.pipeline(name, document, tags):
        if ctx.is_main:
            ctx.tracker.log_artifact(
                write_text(ctx.out_dir / RESOLVED_RECIPE, yaml.safe_dump(document, sort_keys=False))
            )
        torch.manual_seed(recipe.seed)
        runner = PipelineRunner(ctx, STAGES)
        runner.run_all()
        if ctx.is_main:
            _finish(ctx, runner.values)


def _finish(ctx: RunContext, values: Values) -> None:
    """The run's MLflow id, its plots, ``summary.json`` and ``report.md``; the summary's numbers as metrics."""
    ctx.summary["mlflow.run_id"] = ctx.tracker.run_id or ""
    stats = values["result"].statistics()
    plots = [plot_layers(stats, ctx.out_dir / "layers.png"), plot_training(ctx.history, ctx.out_dir / "training.png")]
    for plot in plots:
        if plot is not None:
            ctx.tracker.log_artifact(plot, "plots")
    write_summary_and_report(ctx, stats.layer_table(), values["verdict"].to_dict())
    ctx.tracker.log_metrics({k: v for k, v in ctx.summary.items() if deploy.is_number(v)})


def write_summary_and_report(ctx: RunContext, layer_table: str, gate: dict[str, Any] | None) -> None:
    """``summary.json`` and ``report.md`` from ``ctx.summary`` (``gate``: the FP32 verdict, ``gate.json``'s
    contents), both logged to the run. ``robprune run`` and ``robprune quantize`` end here."""
    summary = write_json(ctx.out_dir / SUMMARY, ctx.summary)
    report = write_report(ctx.out_dir / REPORT, ctx.summary, layer_table, gate=gate)
    for file in (summary, report):
        ctx.tracker.log_artifact(file)


def release_int8(runner: PipelineRunner) -> GateVerdict:
    """The :data:`INT8_STAGES` on ``runner`` (which holds ``deployable``, and the FP32 ``robustness``
    when measured in this process): quantize, evaluate, log, register and gate the INT8 model."""
    for stage in INT8_STAGES:
        runner.run(stage, asked=True)
    verdict: GateVerdict = runner.values["int8_verdict"]
    return verdict


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


def verdict_line(passed: bool, failures: list[str], report: Path) -> str:
    """The one-line verdict commands end with: ``gate PASSED (...)`` or ``gate FAILED: checks (...)``."""
    state = "PASSED" if passed else "FAILED: " + ", ".join(failures)
    return f"gate {state} ({report})"


def run_recipe(recipe: Recipe, out_dir: Path, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Run ``recipe`` into ``out_dir`` without tracking (the CLI wires MLflow in)."""
    return run_pipeline(RunContext(recipe, out_dir, resume=resume, show_progress=show_progress))
