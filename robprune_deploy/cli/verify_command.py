"""``robprune verify RECORD MODEL``: check a gate's ``release.json`` (see :mod:`robprune_deploy.release`).

Prints one line per check (``ok NAME: ...`` or ``MISMATCH NAME: ...``) and exits 0 when every
check matched, 1 when one did not (the last line names which), 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from robprune_deploy.errors import RecipeError
from robprune_deploy.recipe import Recipe, load_recipe, validate_recipe
from robprune_deploy.release.signing import load_public_key
from robprune_deploy.release.verify import Finding, load_record, verify_record

EXIT_MATCH, EXIT_MISMATCH = 0, 1


def handle_verify(args: argparse.Namespace) -> int:
    record = load_record(args.record)
    key = load_public_key(args.public_key) if args.public_key else None
    if args.overrides and args.recipe is None:
        raise RecipeError("--set needs --recipe (the recipe file the overrides apply to)")
    recipe = load_recipe(args.recipe, args.overrides) if args.recipe is not None else None
    findings = verify_record(record, args.model, recipe, key)
    if args.remeasure:
        findings += remeasure(record, args.model, recipe, show_progress=not args.quiet)
    for finding in findings:
        print(finding.line())
    failed = list(dict.fromkeys(f.name.split(" ")[0] for f in findings if not f.ok))
    if failed:
        print(f"verify FAILED: {', '.join(failed)} ({args.record})", file=sys.stderr)
        return EXIT_MISMATCH
    print(f"verify passed: {len(findings)} checks ({args.record})", file=sys.stderr)
    return EXIT_MATCH


def _recorded_recipe(record: dict[str, Any], recipe: Recipe | None) -> Recipe:
    return recipe if recipe is not None else validate_recipe(record["recipe"]["resolved"], "release.json recipe")


def remeasure(record: dict[str, Any], model: Path, recipe: Recipe | None, show_progress: bool = True) -> list[Finding]:
    """Run the gate's measurement again on ``model`` under the recorded recipe (or ``recipe``) and
    check the examples' hash and that each recorded accuracy's new value lies in its 95% interval."""
    from robprune_deploy.gate import staging
    from robprune_deploy.gate.gating import evaluate_gate
    from robprune_deploy.pipeline.run_data import gate_run_data
    from robprune_deploy.release.examples import examples_of
    from robprune_deploy.release.figures import figures_of
    from robprune_deploy.tracking import models as registry

    resolved = _recorded_recipe(record, recipe)
    findings: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="robprune-verify-") as work:
        staged = staging.stage_model(model, Path(work) / "staging" / "candidate")
        baseline_file = None
        if record.get("baseline"):
            source = registry.resolve_onnx(record["baseline"]["source"], resolved.tracking.tracking_uri, "baseline")
            baseline = staging.stage_model(source, Path(work) / "staging" / "baseline")
            ok = baseline.sha256 == record["baseline"]["sha256"]
            findings.append(
                Finding(
                    "baseline",
                    ok,
                    f"{source} has sha256 {baseline.sha256}"
                    + ("" if ok else f", the record says {record['baseline']['sha256']}"),
                )
            )
            baseline_file = baseline.path
        source_data = gate_run_data(resolved, show_progress=show_progress)
        data = source_data.evaluation_data()
        examples = examples_of(source_data, data.name, data.batches)
        ok = examples.sha256 == record["examples"]["sha256"]
        findings.append(
            Finding(
                "examples",
                ok,
                f"sha256 {examples.sha256}" + ("" if ok else f", the record says {record['examples']['sha256']}"),
            )
        )
        verdict = evaluate_gate(resolved, staged.path, data, baseline_file=baseline_file, show_progress=show_progress)
    now = figures_of(verdict)
    for runtime, roles in record["figures"].items():
        for role, figures in roles.items():
            for name, figure in figures.items():
                interval = figure.get("interval")
                if not interval or interval.get("method") != "wilson":
                    continue  # timings are the machine's; exact figures are covered by the model's hash
                value = now.get(runtime, {}).get(role, {}).get(name, {}).get("value")
                inside = value is not None and interval["low"] <= value <= interval["high"]
                shown = "not measured" if value is None else f"{value:.4f}"
                findings.append(
                    Finding(
                        f"figure {runtime}.{role}.{name}",
                        inside,
                        f"remeasured {shown}, recorded {figure['value']:.4f} "
                        f"[{interval['low']:.4f}, {interval['high']:.4f}]",
                    )
                )
    return findings
