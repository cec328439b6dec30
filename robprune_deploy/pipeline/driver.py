"""``robprune run``: the whole pipeline of a recipe, one stage after another, in one MLflow run."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import torch
import yaml

from robprune_deploy import distributed
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
from robprune_deploy.progress import stage_lines
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


def run_pipeline(ctx: RunContext) -> dict[str, Any]:
    """Pretrain -> prune -> finetune -> strip -> export -> evaluate -> gate.

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
        _run_stages(ctx)


def _run_stages(ctx: RunContext) -> None:
    torch.manual_seed(ctx.recipe.seed)
    model = stages.pretrain(ctx)
    dense = copy.deepcopy(model)  # the reference for export, latency and the gate's baseline
    result = stages.prune(ctx, model)
    deployable = stages.finetune(ctx, result)
    if ctx.distributed:
        ctx.summary.update(_check_ranks_agree(deployable, result))
    ctx.summary.update(stages.describe(result, deployable, ctx))
    ctx.tracker.set_tags({"granularity": result.granularity.value})
    # Not a tracked stage (its figures go to the parent run), but minutes long on a big split: said.
    with stage_lines("measure (torch)", ctx.show_progress and ctx.is_main) as lines:
        metrics = stages.robustness(ctx, deployable)
        ctx.summary.update({"torch.clean_acc": metrics["clean_acc"], "torch.pgd_acc": metrics["pgd_acc"]})
        ctx.tracker.log_metrics({f"pruned_{k}": v for k, v in metrics.items()})
        lines.note({"torch.clean_acc": metrics["clean_acc"], "torch.pgd_acc": metrics["pgd_acc"]})
        if ctx.is_main and ctx.val_set is not None:  # the figure hyper-parameter sweeps choose by
            val = stages.validation(ctx, deployable)
            ctx.summary.update({"val.clean_acc": val["val_clean_acc"], "val.pgd_acc": val["val_pgd_acc"]})
            ctx.summary["val.pgd_steps"] = ctx.recipe.attack.val_steps
            ctx.tracker.log_metrics({f"pruned_{k}": v for k, v in val.items()})
            lines.note({"val.clean_acc": val["val_clean_acc"], "val.pgd_acc": val["val_pgd_acc"]})
    if not ctx.is_main:
        return
    ctx.summary.update(ctx.split_summary())
    ctx.summary.update(deploy.export(ctx, deployable, dense, result))
    evaluated, robustness = deploy.evaluate(ctx, deployable)
    ctx.summary.update(evaluated)
    with stage_lines("log models (MLflow)", ctx.show_progress and ctx.recipe.tracking.enabled):
        version = _log_models(ctx, deployable)
    with ctx.stage("gate") as lines:
        model_file = ctx.out_dir / deploy.MODEL_ONNX
        fp32_recipe = declared(ctx.recipe, "fp32")  # the pipeline knows what it exported
        verdict = evaluate_gate(
            fp32_recipe,
            model_file,
            ctx.evaluation_data(),
            torch_model=deployable.cpu(),
            candidate=robustness,
            reference_model=dense.cpu(),
            baseline_file=baseline_path(fp32_recipe, model_file),
            show_progress=ctx.show_progress,
        )
        if "baseline" in verdict.robustness:
            ctx.summary.update(deploy.robustness_summary(verdict.robustness["baseline"], "onnx.dense_"))
        record_verdict(ctx.tracker, verdict, write_gate_report(verdict, ctx.out_dir))
        name = ctx.recipe.tracking.registered_model
        if version is not None and name:
            _promote_and_report(ctx, verdict, name, version, ctx.recipe.tracking.alias, ctx.out_dir)
        lines.note(_verdict_figures(verdict))
    ctx.tracker.set_tags(verdict_tags(verdict))  # the parent's row in the run list shows the verdict too
    ctx.summary.update({"gate.passed": verdict.passed, "gate.failures": verdict.failures})
    if ctx.recipe.quantize.enabled:
        release_int8(ctx, deployable, robustness)
    ctx.summary["mlflow.run_id"] = ctx.tracker.run_id or ""
    stats = result.statistics()
    plots = [plot_layers(stats, ctx.out_dir / "layers.png"), plot_training(ctx.history, ctx.out_dir / "training.png")]
    for plot in plots:
        if plot is not None:
            ctx.tracker.log_artifact(plot, "plots")
    write_summary_and_report(ctx, stats.layer_table(), verdict.to_dict())
    ctx.tracker.log_metrics({k: v for k, v in ctx.summary.items() if deploy.is_number(v)})


def write_summary_and_report(ctx: RunContext, layer_table: str, gate: dict[str, Any] | None) -> None:
    """``summary.json`` and ``report.md`` from ``ctx.summary`` (``gate``: the FP32 verdict, ``gate.json``'s
    contents), both logged to the run. ``robprune run`` and ``robprune quantize`` end here."""
    summary = write_json(ctx.out_dir / SUMMARY, ctx.summary)
    report = write_report(ctx.out_dir / REPORT, ctx.summary, layer_table, gate=gate)
    for file in (summary, report):
        ctx.tracker.log_artifact(file)


def release_int8(ctx: RunContext, deployable: torch.nn.Module, fp32: Any | None) -> GateVerdict:
    """Quantize, evaluate, log and register the INT8 model, and gate it against the FP32 model
    (``fp32``: the FP32 model's robustness measured in this process, else the gate measures it);
    ``int8.*`` figures go into ``ctx.summary``. ``robprune run`` and ``robprune quantize`` both end here."""
    ctx.summary.update(int8_stages.quantize(ctx))
    evaluated, result = deploy.evaluate(ctx, deployable, int8_stages.PRECISION, ctx.summary)
    ctx.summary.update(evaluated)
    int8_file = ctx.out_dir / int8_stages.MODEL_INT8_ONNX
    example = ctx.example_inputs.cpu().numpy()
    uri = ctx.tracker.log_onnx_model(int8_file, example, name="onnx_int8_model")
    ctx.summary["mlflow.int8_model_uri"] = uri or ""
    name, version = ctx.recipe.tracking.registered_model, None
    if uri and name:
        tags = {"algorithm": ctx.recipe.compression.algorithm, "precision": "int8"}
        if ctx.summary.get("mlflow.model_uri"):
            tags[FP32_TAG] = ctx.summary["mlflow.model_uri"]
        version = ctx.tracker.register_model(uri, name, tags)
        ctx.summary["mlflow.int8_registered_version"] = version
    with ctx.stage("gate_int8") as lines:
        verdict = evaluate_gate(
            declared(ctx.recipe, int8_stages.PRECISION),
            int8_file,
            ctx.evaluation_data(),
            reference_model=deployable.cpu(),
            baseline_file=ctx.out_dir / deploy.MODEL_ONNX,
            candidate=result,
            reference=fp32 if ctx.recipe.evaluate.attacks == "pgd" else None,  # else measured with PGD
            show_progress=ctx.show_progress,
        )
        record_verdict(ctx.tracker, verdict, write_gate_report(verdict, ctx.out_dir / INT8_GATE_DIR))
        if version is not None and name:
            alias = ctx.recipe.tracking.alias
            int8_alias = f"{alias}-int8" if alias else None
            _promote_and_report(ctx, verdict, name, version, int8_alias, ctx.out_dir / INT8_GATE_DIR)
        lines.note(_verdict_figures(verdict))
    ctx.tracker.set_tags({"int8.gate.passed": str(verdict.passed).lower()})
    ctx.summary.update({"int8.gate.passed": verdict.passed, "int8.gate.failures": verdict.failures})
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


def _check_ranks_agree(deployable: torch.nn.Module, result: Any) -> dict[str, Any]:
    """Every rank must end with the same masks and weights; a divergence is a bug, not a warning."""
    digest = hashlib.sha256()
    for name, tensor in sorted({**deployable.state_dict(), **result.masks()}.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digests = distributed.gather_objects(digest.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks disagree on the pruned model: {digests}")
    return {"distributed.world_size": len(digests), "distributed.state_sha256": digests[0]}


def _log_models(ctx: RunContext, deployable: torch.nn.Module) -> str | None:
    """Log the stripped torch model and the ONNX model; register the ONNX one when the recipe names it.

    They are logged in the pipeline's parent run, so its page lists the logged and registered models.
    """
    example = ctx.example_inputs.cpu().numpy()
    torch_uri = ctx.tracker.log_torch_model(deployable, example)
    if torch_uri:  # a later run can start from it: model.checkpoint=<this URI>
        ctx.summary["mlflow.torch_model_uri"] = torch_uri
    uri = ctx.tracker.log_onnx_model(ctx.out_dir / deploy.MODEL_ONNX, example)
    ctx.summary["mlflow.model_uri"] = uri or ""
    # The dense model travels with the pruned one, so a later gate on models:/NAME/V finds its baseline.
    baseline = ctx.tracker.log_file(ctx.out_dir / deploy.DENSE_ONNX, "baseline")
    tags = {"algorithm": ctx.recipe.compression.algorithm}
    if baseline:
        ctx.summary["mlflow.baseline_uri"] = baseline
        tags[BASELINE_TAG] = baseline
        ctx.tracker.set_tags({BASELINE_TAG: baseline})
    name = ctx.recipe.tracking.registered_model
    if uri and name:
        version = ctx.tracker.register_model(uri, name, tags)
        ctx.summary["mlflow.registered_model"] = name
        ctx.summary["mlflow.registered_version"] = version
        return version
    return None


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
