"""``robprune export``, ``robprune evaluate`` and ``robprune gate``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from robprune_deploy.cli.common import context_of, recipe_of
from robprune_deploy.cli.report_folder import report_folder
from robprune_deploy.errors import ArgumentError, QuantizationError, RecipeError, RobPruneError, printable
from robprune_deploy.gate import staging
from robprune_deploy.gate.gating import (
    GATE_JSON,
    SHA256_DETAILS,
    GateVerdict,
    baseline_path,
    declared,
    evaluate_gate,
    promote,
    write_gate_report,
)
from robprune_deploy.pipeline import RunContext, deploy
from robprune_deploy.pipeline.driver import STAGES, SUMMARY, release_int8, verdict_line, write_summary_and_report
from robprune_deploy.pipeline.ownership import owned_output
from robprune_deploy.pipeline.release_stages import INT8_GATE_DIR, record_verdict
from robprune_deploy.pipeline.run_data import gate_run_data
from robprune_deploy.pipeline.stage_runner import PipelineRunner
from robprune_deploy.recipe import Recipe, recipe_to_dict
from robprune_deploy.recipe.registry_names import alias_problem, model_name_problem
from robprune_deploy.release.examples import examples_of
from robprune_deploy.release.record import ReleaseInputs
from robprune_deploy.release.signing import load_private_key
from robprune_deploy.termination import raise_if_terminated
from robprune_deploy.tracking import models as registry
from robprune_deploy.tracking.store_checks import check_store, default_tracking_uri

EXIT_PASS, EXIT_FAIL = 0, 1


def _restored(ctx: RunContext) -> PipelineRunner:
    """A runner holding the dense, pruning result and deployable models rebuilt from the files in ``--out``."""
    ctx.resume = True
    for stage in ("pretrain", "prune", "finetune"):
        if not ctx.state.is_done(stage):
            raise RobPruneError(f"{ctx.out_dir}: no completed {stage} stage; run `robprune {stage}` (or run) first")
    runner = PipelineRunner(ctx, STAGES)
    runner.run_through("finetune")
    return runner


def handle_export(args: argparse.Namespace) -> int:
    ctx = context_of(args, recipe_of(args))
    with (
        owned_output(ctx, fresh=False),
        ctx.tracker.pipeline("export", recipe_to_dict(ctx.recipe), {"stage": "export"}),
    ):
        runner = _restored(ctx)
        record = runner.run(runner.stage("export"))
    assert record is not None
    print(json.dumps(record.figures, indent=2))
    return 0


def handle_evaluate(args: argparse.Namespace) -> int:
    ctx = context_of(args, recipe_of(args))
    with (
        owned_output(ctx, fresh=False),
        ctx.tracker.pipeline("evaluate", recipe_to_dict(ctx.recipe), {"stage": "evaluate"}),
    ):
        runner = _restored(ctx)
        if not ctx.state.is_done("export") or not (ctx.out_dir / deploy.MODEL_ONNX).is_file():
            raise RobPruneError(f"{ctx.out_dir}: no exported {deploy.MODEL_ONNX}; run `robprune export` first")
        record = runner.run(runner.stage("evaluate"))
    assert record is not None
    summary = record.figures
    print(json.dumps(summary, indent=2))
    print(
        f"latency (median, {summary['latency.provider']}): batch {summary['latency.batch']}: "
        f"dense {summary['latency.dense_ms']:.3f} ms, pruned {summary['latency.pruned_ms']:.3f} ms "
        f"(x{summary['latency.speedup']:.2f}, 95% interval {summary['latency.speedup_low']:.2f}-"
        f"{summary['latency.speedup_high']:.2f}); batch 1: dense {summary['latency.dense_b1_ms']:.3f} ms, "
        f"pruned {summary['latency.pruned_b1_ms']:.3f} ms (x{summary['latency.speedup_b1']:.2f})"
    )
    return 0


def handle_quantize(args: argparse.Namespace) -> int:
    """What ``robprune run`` does with ``quantize.enabled``, on a finished folder: quantize, evaluate,
    log, register and gate the INT8 model; ``summary.json`` and ``report.md`` gain the ``int8.*``
    figures. Exit 1 when the INT8 gate fails."""
    ctx = context_of(args, recipe_of(args))
    with (
        owned_output(ctx, fresh=False),
        ctx.tracker.pipeline("quantize", recipe_to_dict(ctx.recipe), {"stage": "quantize", "precision": "int8"}),
    ):
        completed = ctx.state.completed()
        if "export" not in completed or not (ctx.out_dir / deploy.MODEL_ONNX).is_file():
            raise QuantizationError(
                f"{ctx.out_dir}: no exported {deploy.MODEL_ONNX} to quantize; run `robprune export` first"
            )
        if "evaluate" not in completed:
            raise QuantizationError(
                f"{ctx.out_dir}: the FP32 model is not evaluated (the INT8 figures are compared with its); "
                "run `robprune evaluate` first"
            )
        runner = _restored(ctx)
        summary_file = ctx.out_dir / SUMMARY
        if summary_file.is_file():  # a finished run's figures; the INT8 ones are added to them
            ctx.summary.update(json.loads(summary_file.read_text()))
        for figures in ctx.state.completed().values():
            ctx.summary.update(figures)
        verdict = release_int8(runner)
        fp32_gate = ctx.out_dir / GATE_JSON  # the run's FP32 verdict keeps its section in report.md
        gate = json.loads(fp32_gate.read_text()) if fp32_gate.is_file() else None
        write_summary_and_report(ctx, runner.values["result"].statistics().layer_table(), gate)
    print(json.dumps({k: v for k, v in ctx.summary.items() if k.startswith(("int8.", "mlflow.int8"))}, indent=2))
    print(verdict_line(verdict.passed, verdict.failure_lines, ctx.out_dir / INT8_GATE_DIR / "gate.md"))
    return EXIT_PASS if verdict.passed else EXIT_FAIL


def _check_registration_arguments(args: argparse.Namespace) -> None:
    """``--register``/``--alias`` are checked before the gate measures anything."""
    if args.alias and not args.register:
        raise RecipeError("--alias needs --register NAME")
    problem = model_name_problem(args.register) if args.register is not None else None
    if problem:
        raise RecipeError(f"--register {args.register!r}: {problem}")
    problem = alias_problem(args.alias) if args.alias is not None else None
    if problem:
        raise RecipeError(f"--alias {args.alias!r}: {problem}")


def _gate(args: argparse.Namespace, recipe: Recipe) -> int:
    """The gate, inside its owned ``--report`` folder (checked there, like ``--out``)."""
    _check_registration_arguments(args)
    sign_key = load_private_key(args.sign_key) if args.sign_key else None  # a bad key is said before measuring
    if args.register:  # the verdict is recorded there: a store that cannot take it is said before measuring
        check_store(recipe.tracking.tracking_uri or default_tracking_uri())
    source = registry.resolve_onnx(args.model, recipe.tracking.tracking_uri)
    known = registry.registered_version(args.model) if args.register else None
    if known is not None and known[0] != args.register:
        raise RecipeError(f"--register {args.register}: MODEL {args.model} is a version of {known[0]!r}")
    with tempfile.TemporaryDirectory(prefix="robprune-gate-") as work:
        # Measured, logged and registered: the bytes read here, once (see robprune_deploy.gate.staging).
        staged = [staging.stage_model(source, Path(work) / "staging" / "candidate")]
        try:
            baseline_source = baseline_path(recipe, staged[0].path, args.model, beside=source)
            if baseline_source is not None:
                staged.append(staging.stage_model(baseline_source, Path(work) / "staging" / "baseline"))
            source_data = gate_run_data(recipe, show_progress=not args.quiet)
            data = source_data.evaluation_data()
            verdict = evaluate_gate(
                recipe,
                staged[0].path,
                data,
                baseline_file=staged[1].path if len(staged) > 1 else None,
                show_progress=not args.quiet,
            )
        except RobPruneError as exc:
            raise staging.as_source(exc, staged) from None
        verdict.details["model"] = args.model
        verdict.details["model_sha256"] = staged[0].sha256
        if len(staged) > 1:
            verdict.details["baseline_model"] = registry.origin_of(staged[1].source)
            verdict.details["baseline_sha256"] = staged[1].sha256
        release = ReleaseInputs(
            recipe, staged[0], args.model, examples_of(source_data, data.name, data.batches),
            staged[1] if len(staged) > 1 else None, verdict.details.get("baseline_model"), args.register, sign_key,
        )  # fmt: skip
        reports = write_gate_report(verdict, args.report) + release.write(verdict, args.report)
        raise_if_terminated()  # a SIGTERM lost in a plot's finalizer stops here, before registering
        # Recorded in MLflow when asked to promote a version (--register is explicit, whatever the recipe's
        # tracking.enabled says) and, with tracking enabled, inside an MLflow run (an MLproject step).
        if args.register or (recipe.tracking.enabled and os.environ.get("MLFLOW_RUN_ID")):
            _track(args, recipe, staged[0], verdict, known[1] if known else None, reports, release)
    print(verdict_line(verdict.passed, verdict.failure_lines, args.report / "gate.md"))
    return EXIT_PASS if verdict.passed else EXIT_FAIL


def _track(
    args: argparse.Namespace,
    recipe: Any,
    model: staging.StagedModel,
    verdict: GateVerdict,
    version: str | None,
    reports: list[Path],
    release: ReleaseInputs,
) -> None:
    """Record the verdict in one MLflow ``gate`` run, and tag (on a pass, alias) the model version.

    The version is tagged and its alias moved only when its artifact holds the bytes the gate
    measured (same SHA-256); a mismatch, like a tracking server that cannot be reached, does not change
    the verdict, whose exit code stands: the failure is reported on stderr and in gate.json.
    """
    from mlflow.exceptions import MlflowException

    from robprune_deploy.tracking.mlflow_tracker import MlflowTracker
    from robprune_deploy.tracking.store_checks import check_server

    t = recipe.tracking
    hashes = {
        tag: str(verdict.details[key]) for key, tag in SHA256_DETAILS.items() if verdict.details.get(key) is not None
    }
    try:
        check_server(t.tracking_uri or default_tracking_uri())
        tracker = MlflowTracker(t.tracking_uri, t.experiment, timeout_s=t.timeout_s, retries=t.retries)
        with tracker.pipeline("gate", recipe_to_dict(recipe), {"stage": "gate", "model": args.model, **hashes}):
            if args.register:
                version = version or _log_version(args, tracker, model)
                verdict.details["registered_version"] = version
                staging.check_registered_bytes(args.register, version, model, t.tracking_uri)
                verdict.details["alias"] = promote(verdict, args.register, version, args.alias)
                reports = write_gate_report(verdict, args.report) + release.write(verdict, args.report)
            record_verdict(tracker, verdict, reports)
    except (RobPruneError, MlflowException, OSError) as exc:  # requests' errors are OSErrors
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        verdict.details["registration_error"] = detail
        state = "PASSED" if verdict.passed else "FAILED"
        what = f"registration as {args.register!r}" if args.register else "recording the verdict in MLflow"
        print(f"error: {what} failed, the verdict stands ({state}): {printable(detail)}", file=sys.stderr)
        write_gate_report(verdict, args.report)
        release.write(verdict, args.report)


def handle_gate(args: argparse.Namespace) -> int:
    recipe = recipe_of(args)
    if args.precision is not None:  # the command's declaration wins over the recipe's
        recipe = declared(recipe, args.precision)
    if args.plan:
        return _plan(args, recipe)
    if args.pilot is not None:
        raise ArgumentError("--pilot: only with --plan")
    for value, name in ((args.model, "MODEL"), (args.report, "--report")):
        if value is None:
            raise ArgumentError(f"{name}: required (unless --plan)")
    with report_folder(args, recipe):  # --report: checked, claimed and locked like --out
        return _gate(args, recipe)


def _plan(args: argparse.Namespace, recipe: Recipe) -> int:
    from robprune_deploy.gate.plan import plan, plan_lines, read_pilot

    if args.model is not None or args.report is not None:
        raise ArgumentError(f"{'MODEL' if args.model is not None else '--report'}: --plan measures nothing")
    rows = plan(recipe, read_pilot(args.pilot) if args.pilot is not None else None)
    print("\n".join(plan_lines(rows, recipe.gate.drop_rule)))
    return 0


def _log_version(args: argparse.Namespace, tracker: Any, model: staging.StagedModel) -> str:
    """Log the staged MODEL, byte for byte, in the gate's run and register it as a new version of ``--register``."""
    import numpy as np

    from robprune_deploy.evaluation import OnnxClassifier

    shape = [d if isinstance(d, int) else 1 for d in OnnxClassifier(model.path, ["cpu"]).input_shape]
    uri = tracker.log_onnx_model(model.path, np.zeros(shape, dtype=np.float32), exact=True)
    version = tracker.register_model(uri, args.register, {"source": args.model, staging.SHA256_TAG: model.sha256})
    assert version is not None
    return str(version)
