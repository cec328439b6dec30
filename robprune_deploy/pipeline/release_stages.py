"""The release stages: log the models in MLflow and register them, gate each precision against
its reference, and promote a registered version that passes (:data:`~robprune_deploy.pipeline.driver.STAGES`
runs them after the evaluation)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robprune_deploy.errors import ReleaseError, RobPruneError, TrackingError, printable
from robprune_deploy.gate import staging
from robprune_deploy.gate.gating import GateVerdict, baseline_path, declared, evaluate_gate, promote, write_gate_report
from robprune_deploy.pipeline import deploy
from robprune_deploy.pipeline import int8_stage as int8_stages
from robprune_deploy.pipeline.context import RunContext
from robprune_deploy.pipeline.stage_runner import StageBase, StageRecord, Tracking, Values
from robprune_deploy.progress import StageLines, stage_lines
from robprune_deploy.recipe import Recipe
from robprune_deploy.release.examples import examples_of
from robprune_deploy.release.record import RELEASE_JSON, ReleaseInputs
from robprune_deploy.tracking import Tracker
from robprune_deploy.tracking import models as registry
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
        with _staged(ctx, model_file, "onnx.sha256", baseline_path(fp32_recipe, model_file)) as staged:
            verdict = staged.evaluate(
                fp32_recipe,
                torch_model=values["deployable"].cpu(),
                candidate=values["robustness"],
                reference_model=values["dense"].cpu(),
            )
            figures: dict[str, Any] = {}
            if "baseline" in verdict.robustness:
                figures.update(deploy.robustness_summary(verdict.robustness["baseline"], "onnx.dense_"))
            name, version = ctx.recipe.tracking.registered_model, values["version"]
            release = staged.release(fp32_recipe, verdict, name if version is not None else None)
            record_verdict(
                ctx.tracker, verdict, write_gate_report(verdict, ctx.out_dir) + release.write(verdict, ctx.out_dir)
            )
            if version is not None and name:
                _promote_and_report(ctx, verdict, name, version, ctx.recipe.tracking.alias, ctx.out_dir, release)
        lines.note(_verdict_figures(verdict))
        values["verdict"] = verdict
        figures.update({"gate.passed": verdict.passed, "gate.failures": verdict.failures})
        figures["gate.paired_drops"] = {name: drop.to_dict() for name, drop in verdict.paired_drops.items()}
        figures.update(_hashes(verdict, "gate.", ctx.out_dir))
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
        uri = ctx.tracker.log_onnx_model(
            ctx.out_dir / int8_stages.MODEL_INT8_ONNX, example, name="onnx_int8_model", exact=True
        )
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
        recipe = declared(ctx.recipe, int8_stages.PRECISION)
        directory = ctx.out_dir / INT8_GATE_DIR
        model_file = ctx.out_dir / int8_stages.MODEL_INT8_ONNX
        with _staged(ctx, model_file, "int8.sha256", ctx.out_dir / deploy.MODEL_ONNX) as staged:
            verdict = staged.evaluate(
                recipe,
                reference_model=values["deployable"].cpu(),
                candidate=values["int8_robustness"],
                reference=fp32 if ctx.recipe.evaluate.attacks == "pgd" else None,  # else measured with PGD
            )
            name, version = ctx.recipe.tracking.registered_model, values["int8_version"]
            release = staged.release(recipe, verdict, name if version is not None else None)
            record_verdict(
                ctx.tracker, verdict, write_gate_report(verdict, directory) + release.write(verdict, directory)
            )
            if version is not None and name:
                alias = ctx.recipe.tracking.alias
                int8_alias = f"{alias}-int8" if alias else None
                _promote_and_report(ctx, verdict, name, version, int8_alias, directory, release)
        lines.note(_verdict_figures(verdict))
        values["int8_verdict"] = verdict
        figures = {"int8.gate.passed": verdict.passed, "int8.gate.failures": verdict.failures}
        hashes = _hashes(verdict, "int8.gate.", directory)
        figures.update({k: v for k, v in hashes.items() if k != "int8.gate.baseline_sha256"})  # model.onnx's: gate.
        return StageRecord(self.name, figures, tags={"int8.gate.passed": str(verdict.passed).lower()})


@dataclass
class _StagedGate:
    """The gate stage's own copies of the model it gates and of its reference, each read once and
    hashed (:mod:`robprune_deploy.gate.staging`): what is measured, recorded and registered."""

    ctx: RunContext
    source: Path
    model: staging.StagedModel
    baseline: staging.StagedModel | None

    def evaluate(self, recipe: Recipe, **known: Any) -> GateVerdict:
        staged = [self.model] + ([self.baseline] if self.baseline is not None else [])
        try:
            verdict = evaluate_gate(
                recipe,
                self.model.path,
                self.ctx.evaluation_data(),
                baseline_file=self.baseline.path if self.baseline is not None else None,
                show_progress=self.ctx.show_progress,
                **known,
            )
        except RobPruneError as exc:
            raise staging.as_source(exc, staged) from None
        verdict.details["model"] = str(self.source)
        verdict.details["model_sha256"] = self.model.sha256
        if self.baseline is not None:
            verdict.details["baseline_model"] = registry.origin_of(self.baseline.source)
            verdict.details["baseline_sha256"] = self.baseline.sha256
        return verdict

    def release(self, recipe: Recipe, verdict: GateVerdict, registered_name: str | None) -> ReleaseInputs:
        data = self.ctx.evaluation_data()
        return ReleaseInputs(
            recipe, self.model, str(self.source), examples_of(self.ctx, data.name, data.batches), self.baseline,
            verdict.details.get("baseline_model"), registered_name, self.ctx.sign_key,
        )  # fmt: skip


@contextmanager
def _staged(ctx: RunContext, model_file: Path, measured_key: str, baseline: Path | None) -> Iterator[_StagedGate]:
    """Stage ``model_file`` and ``baseline`` for the gate; the model must be the bytes the evaluation
    stage measured (``ctx.summary[measured_key]``), or the gate refuses to record anything."""
    with tempfile.TemporaryDirectory(prefix="robprune-gate-") as work:
        model = staging.stage_model(model_file, Path(work) / "candidate")
        measured = ctx.summary.get(measured_key)
        if model.sha256 != measured:
            raise ReleaseError(
                f"{model_file}: its bytes (sha256 {model.sha256}) are not those the evaluation measured "
                f"(sha256 {measured}); the file changed after it was measured, nothing was gated"
            )
        staged_baseline = staging.stage_model(baseline, Path(work) / "baseline") if baseline is not None else None
        yield _StagedGate(ctx, model_file, model, staged_baseline)


def _hashes(verdict: GateVerdict, prefix: str, directory: Path) -> dict[str, Any]:
    figures = {
        f"{prefix}{key}": verdict.details[key]
        for key in ("model_sha256", "baseline_sha256")
        if verdict.details.get(key)
    }
    return figures | {f"{prefix}release": str(directory / RELEASE_JSON)}


def _promote_and_report(
    ctx: RunContext,
    verdict: GateVerdict,
    name: str,
    version: str,
    alias: str | None,
    directory: Path,
    release: ReleaseInputs,
) -> None:
    """Tag the registered version (alias on a pass, see :func:`promote`) once its artifact is checked to
    hold the bytes the gate measured, then write the gate's report and release record again with the
    registration and what happened to each alias, and log them again.

    The report without them is already written and logged: a registry that fails here leaves a
    verdict on disk and in the run. A version whose bytes differ is neither tagged nor aliased."""
    verdict.details.update({"registered_model": name, "registered_version": version})
    try:
        staging.check_registered_bytes(name, version, release.model, ctx.recipe.tracking.tracking_uri)
    except TrackingError as exc:
        verdict.details["registration_error"] = str(exc)
        print(f"error: registration as {name!r}: {printable(str(exc))}", file=sys.stderr)
    else:
        verdict.details["alias"] = promote(verdict, name, version, alias)
    for file in write_gate_report(verdict, directory) + release.write(verdict, directory):
        ctx.tracker.log_artifact(file, "gate")


def _log_models(ctx: RunContext, deployable: torch.nn.Module) -> tuple[dict[str, Any], str | None]:
    """The ``mlflow.*`` entries of :class:`LogModels`, and the registered version (or ``None``)."""
    figures: dict[str, Any] = {}
    example = ctx.example_inputs.cpu().numpy()
    torch_uri = ctx.tracker.log_torch_model(deployable, example)
    if torch_uri:  # a later run can start from it: model.checkpoint=<this URI>
        figures["mlflow.torch_model_uri"] = torch_uri
    # Logged byte for byte: the gate checks the registered artifact against the bytes it measured.
    uri = ctx.tracker.log_onnx_model(ctx.out_dir / deploy.MODEL_ONNX, example, exact=True)
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
