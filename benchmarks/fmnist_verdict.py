"""The powered Fashion-MNIST verdict on the seeds' claims: power plan, sweeps on ``robprune sweep``, claims.

The verdict is a set of sweep files, ``recipes/sweeps/fmnist_verdict/``: a validation sweep that
chooses S2AP's radius, and one test sweep per method and fine-tuning whose grid is compression ratio
x seed. Every trial is one ``robprune run`` of a recipe of ``recipes/fmnist_verdict/``, starting from
the shipped start model of its network (``benchmarks/start_models/``), so seeds vary the training
subset, the mask search and the fine-tuning only. This script orders the sweeps and reads them:

    python benchmarks/fmnist_verdict.py plan       # power first: what the planned seeds and examples detect
    python benchmarks/fmnist_verdict.py run        # validation sweep, radius choice, test sweeps, report
    python benchmarks/fmnist_verdict.py commands   # the same steps as separate commands
    python benchmarks/fmnist_verdict.py choose     # the radius choice (after the validation sweep)
    python benchmarks/fmnist_verdict.py report     # every finished trial into results.json; the claims
    python benchmarks/fmnist_verdict.py smoke --out /tmp/verdict-smoke   # the whole path, tiny (18 trials, ~1 hour)

Workers: start ``run`` N times (N terminals, or N machines sharing this folder) for N workers. Each
runs the sweeps in the same order; every sweep's trials are shared among the workers that joined its
study (a journal file under ``benchmarks/results/fmnist_verdict/studies/``), each trial runs exactly
once, and rerunning the command resumes: completed trials are kept, an interrupted one continues its
run folder. Commit ``benchmarks/results/fmnist_verdict/`` after ``report`` to go on elsewhere: the
studies carry which trials are done, ``results.json`` and ``masks/`` their records. Run from the
repository root: the recipes' ``model.checkpoint`` and ``data.root`` are relative to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VALIDATION = "s2ap_radius"
TEST_SWEEPS = ("hydra", "s2ap", "l1_filter", "mrpf", "hydra_awp", "s2ap_awp")
"""In the order they run: the main S2AP arm, MRPF, then the AWP arm (the first to cut on a short budget)."""
RADIUS = "compression.config.swap_fraction"
RADIUS_SWEEPS = ("s2ap", "s2ap_awp")
"""The test sweeps that get the radius chosen on validation."""
PILOT = HERE / "results" / "fmnist_cpu_short" / "results.json"
"""The committed grid whose paired sd the power plan uses by default (3 seeds, 400 test images)."""
TEST_EXAMPLES = 10_000
"""Fashion-MNIST's test split: a larger evaluate.num_examples evaluates all of it."""


@dataclass(frozen=True)
class Layout:
    """Where the sweep files are and where the verdict's results go."""

    sweeps: Path
    results: Path

    def sweep_file(self, name: str) -> Path:
        return self.sweeps / f"{name}.yaml"

    def spec(self, name: str) -> Any:
        from robprune_deploy.sweep.spec import load_sweep

        return load_sweep(self.sweep_file(name))


VERDICT = Layout(REPO / "recipes" / "sweeps" / "fmnist_verdict", HERE / "results" / "fmnist_verdict")


def shown(path: Path) -> str:
    """``path`` from the repository root when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def planned_claims(layout: Layout = VERDICT) -> list[tuple[Any, str, int]]:
    """``(arm, setting, seeds)`` of every claim the test sweeps' grids plan (seeds both sides share)."""
    from fmnist_claims import ARMS
    from fmnist_verdict_records import setting_name

    from robprune_deploy.recipe import load_recipe

    planned = []
    for arm in ARMS:
        method, baseline = layout.spec(arm.method), layout.spec(arm.baseline)
        seeds = set(method.grid["seed"]) & set(baseline.grid["seed"])
        granularity = load_recipe(method.recipe).compression.config.get("granularity")
        for ratio in sorted(set(method.grid["compression.ratio"]) & set(baseline.grid["compression.ratio"])):
            planned.append((arm, setting_name(ratio, granularity), len(seeds)))
    return planned


def examples_per_metric(layout: Layout = VERDICT) -> dict[str, int]:
    """Test examples each metric covers per trial, from the recipes (the same for every test sweep)."""
    from robprune_deploy.recipe import load_recipe

    spec = layout.spec(TEST_SWEEPS[0])
    evaluate = load_recipe(spec.recipe, spec.fixed_overrides()).evaluate
    whole = min(evaluate.num_examples, TEST_EXAMPLES)
    return {"pgd20": whole, "autoattack": min(evaluate.ensemble_examples or whole, whole)}


def start_models(layout: Layout = VERDICT, *, shipped: bool = True) -> dict[str, dict[str, Any]]:
    """The start model of every sweep's network: its checkpoint and SHA-256, checked before any trial runs.

    Every method and seed starts from the same checkpoint (``model.checkpoint`` of the recipes, read
    relative to the repository root), so a missing one stops the verdict here, naming the command that
    trains and ships it, and a checkpoint whose SHA-256 is not the one its ``<name>.json`` recorded when
    it was shipped (``benchmarks/start_models.py ship``) stops it too. With ``shipped=False`` (a report
    while a start model is still training) a missing checkpoint is recorded as such.
    """
    import hashlib

    from robprune_deploy.recipe import load_recipe

    found: dict[str, dict[str, Any]] = {}
    for name in (VALIDATION, *TEST_SWEEPS):
        spec = layout.spec(name)
        recipe = load_recipe(spec.recipe, spec.fixed_overrides())
        model, checkpoint = recipe.model.name, recipe.model.checkpoint
        if model in found:
            continue
        if checkpoint is None:
            raise SystemExit(f"error: {shown(layout.sweep_file(name))}: model.checkpoint is not set: every trial "
                             "must start from the shipped start model")  # fmt: skip
        path = checkpoint if Path(checkpoint).is_absolute() else REPO / checkpoint
        if not Path(path).is_file() and not shipped:
            found[model] = {"checkpoint": shown(Path(path)), "sha256": None, "recorded": False}
            continue
        if not Path(path).is_file():
            raise SystemExit(
                f"error: {shown(Path(path))} (model.checkpoint of {shown(layout.sweep_file(name))}) does not exist; "
                f"train and ship it first: python benchmarks/start_models.py train {model} && "
                f"python benchmarks/start_models.py ship {model}"
            )
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        record_file = Path(path).with_suffix(".json")
        recorded = json.loads(record_file.read_text()).get("sha256") if record_file.is_file() else None
        if recorded is not None and recorded != digest:
            raise SystemExit(f"error: {shown(Path(path))}: SHA-256 {digest} is not the {recorded} recorded in "
                             f"{shown(record_file)}")  # fmt: skip
        found[model] = {"checkpoint": shown(Path(path)), "sha256": digest, "recorded": recorded is not None}
    return found


def plan(pilot_path: Path, write: bool, layout: Layout = VERDICT) -> None:
    """Print the power plan (and write it to ``plan.json`` with ``write``)."""
    from fmnist_claims import power_plan
    from fmnist_verdict_records import grouped
    from fmnist_verdict_tables import PLAN_RENDERER, plan_tables
    from provenance import provenance
    from result_tables import render_table, results_file

    from robprune_deploy.atomic import write_json

    pilot = json.loads(pilot_path.read_text())
    cells = grouped(r for r in pilot["records"].values() if r.get("task") == "cell" and r.get("status") == "done")
    examples = examples_per_metric(layout)
    rows = [
        {
            "claim": row.arm.label,
            "setting": row.setting,
            "metric": row.metric.label,
            **{k: v for k, v in asdict(row).items() if k not in ("arm", "setting", "metric")},
            "claimed": row.arm.claimed,
        }
        for row in power_plan(cells, planned_claims(layout), examples)
    ]
    document = results_file(
        provenance(), renderer=PLAN_RENDERER, pilot=shown(pilot_path), examples=examples, power=rows
    )
    print(
        f"Power plan (80% power, two-sided 5%; points of accuracy): pilot sd from {document['pilot']} "
        f"({pilot.get('budget', '?')} budget); {examples['pgd20']:,} test examples per trial for PGD-20, "
        f"{examples['autoattack']:,} for AutoAttack-fast.",
        flush=True,
    )
    print(render_table(plan_tables(document)["power"]), flush=True)
    if write:
        layout.results.mkdir(parents=True, exist_ok=True)
        print(write_json(layout.results / "plan.json", document))


def sweep_command(name: str, layout: Layout = VERDICT) -> list[str]:
    return [sys.executable, "-m", "robprune_deploy.cli.main", "sweep", shown(layout.sweep_file(name))]


def child_env() -> dict[str, str]:
    """The sweep's environment: the repository and its plugins importable, one thread per process
    (each worker is one process; the recipes say runtime.threads 1 too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    paths = [str(REPO), str(REPO / "plugins"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def run_sweep(name: str, layout: Layout = VERDICT) -> None:
    """One worker of sweep ``name`` until its study is complete; stops the verdict when a trial failed."""
    command = sweep_command(name, layout)
    print("+ " + " ".join(["robprune", *command[3:]]), flush=True)
    code = subprocess.run(command, cwd=REPO, env=child_env()).returncode
    if code != 0:
        raise SystemExit(f"error: robprune {' '.join(command[3:])} exited {code}; fix the cause and rerun")
    document = json.loads((layout.spec(name).out / "sweep.json").read_text())
    if document.get("failed"):
        trials = ", ".join(map(str, document["failed"]))
        raise SystemExit(f"error: sweep {name}: trial {trials} failed (see its sweep.json); rerun to retry them")


def radius_scores(document: dict[str, Any]) -> dict[float, dict[int, float]]:
    """Radius -> seed -> validation PGD accuracy, from the validation sweep's completed trials."""
    scores: dict[float, dict[int, float]] = {}
    for trial in document["trials"]:
        if trial["state"] == "COMPLETE":
            scores.setdefault(float(trial["params"][RADIUS]), {})[int(trial["params"]["seed"])] = trial["value"]
    return scores


_RADIUS_LINE = re.compile(rf"^(\s*{re.escape(RADIUS)}:\s*)([^\s#]+)(.*)$", re.MULTILINE)


def write_radius(path: Path, radius: float) -> bool:
    """Put ``radius`` into the fixed settings of the sweep file ``path`` (its comments kept); whether it changed."""
    from robprune_deploy.atomic import write_text

    text = path.read_text()
    if not _RADIUS_LINE.search(text):
        raise SystemExit(f"error: {path}: no '{RADIUS}:' line in its fixed settings to write the choice into")
    new = _RADIUS_LINE.sub(lambda m: f"{m.group(1)}{json.dumps(radius)}{m.group(3)}", text, count=1)
    if new != text:
        write_text(path, new)
    return new != text


def choose(layout: Layout = VERDICT) -> float:
    """S2AP's radius from the complete validation sweep by the paired-SE rule, written into the S2AP
    test sweeps and recorded in ``radius_choice.json``."""
    from provenance import provenance
    from result_tables import results_file

    from robprune_deploy.atomic import write_json
    from robprune_deploy.recipe import load_recipe
    from robprune_deploy.statistics import choose_variant

    spec = layout.spec(VALIDATION)
    found = spec.out / "sweep.json"
    document = json.loads(found.read_text()) if found.is_file() else {}
    if not document.get("complete") or document.get("failed"):
        again = " ".join(["robprune", *sweep_command(VALIDATION, layout)[3:]])
        raise SystemExit(f"error: {found}: the validation sweep is not complete; run {again}")
    default = float(load_recipe(spec.recipe).compression.config[RADIUS.rsplit(".", 1)[-1]])
    scores = radius_scores(document)
    choice = choose_variant(scores, default)
    targets = [layout.sweep_file(name) for name in RADIUS_SWEEPS]
    record = results_file(
        provenance(),
        renderer="fmnist_verdict_tables:radius_tables",
        sweep=shown(layout.sweep_file(VALIDATION)),
        default=default,
        chosen=choice.chosen,
        reason=choice.reason,
        scores={str(radius): {str(seed): v for seed, v in by_seed.items()} for radius, by_seed in scores.items()},
        gains={str(radius): gain.to_dict() for radius, gain in choice.gains.items()},
        skipped={str(radius): why for radius, why in choice.skipped.items()},
        written_into=[shown(path) for path in targets],
    )
    layout.results.mkdir(parents=True, exist_ok=True)
    write_json(layout.results / "radius_choice.json", record)
    for path in targets:
        changed = write_radius(path, choice.chosen)
        print(f"{shown(path)}: {RADIUS} {choice.chosen}{'' if changed else ' (already)'}")
    print(f"radius: {choice.chosen} ({choice.reason}); recorded in {shown(layout.results / 'radius_choice.json')}")
    return choice.chosen


def report(layout: Layout = VERDICT) -> Path:
    """Every completed test trial into ``results.json`` (figures, per-example outcomes, masks under
    ``masks/``, mask distances), keeping the committed records of trials whose run folders are on
    another machine; prints the claims and the cells."""
    from fmnist_verdict_records import (
        Place,
        grouped,
        keep_mask,
        mask_distances,
        merged,
        sweep_records,
        trial_place,
    )
    from fmnist_verdict_tables import RESULTS_RENDERER, verdict_tables
    from provenance import provenance
    from result_tables import render_table, results_file

    from robprune_deploy.atomic import write_json

    results = layout.results / "results.json"
    committed = json.loads(results.read_text())["records"] if results.is_file() else []
    found: list[dict[str, Any]] = []
    missing: list[str] = []
    incomplete: dict[Place, str] = {}
    elsewhere: dict[Place, str] = {}
    for name in TEST_SWEEPS:
        out = layout.spec(name).out
        if not (out / "sweep.json").is_file():
            if not any(r.get("sweep") == name for r in committed):
                missing.append(f"{name}: not started")
            continue
        records, unfinished, away = sweep_records(name, out)
        found += records
        incomplete.update(unfinished)
        elsewhere.update(away)
    for record in found:
        keep_mask(record, layout.results)
    records = merged(found, committed)
    carried = len(records) - len(found)
    reported = {trial_place(r) for r in records}
    # a trial unfinished or run elsewhere is missing only where no record, here or committed, covers its place
    missing += [line for place, line in {**incomplete, **elsewhere}.items() if place not in reported]
    records.sort(key=trial_place)
    distances = {
        cell: d for cell, rows in grouped(records).items() if (d := mask_distances(rows, layout.results)) is not None
    }
    choice = layout.results / "radius_choice.json"
    document = results_file(
        provenance(),
        renderer=RESULTS_RENDERER,
        start_models=start_models(layout, shipped=False),
        records=records,
        missing=missing,
        mask_distances=distances,
        radius_choice=json.loads(choice.read_text())["chosen"] if choice.is_file() else None,
    )
    layout.results.mkdir(parents=True, exist_ok=True)
    path = write_json(results, document)
    tables = verdict_tables(document)
    print(render_table(tables["claims"]), "", render_table(tables["cells"]), sep="\n")
    if carried:
        print(f"{carried} records carried from the committed {shown(results)} (run elsewhere)")
    if missing:
        print(f"{len(missing)} trials missing: " + "; ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
    print(path)
    return path


def run(pilot: Path, layout: Layout = VERDICT) -> None:
    """Start models checked, power plan, validation sweep, radius choice, test sweeps, report: one
    worker of each sweep."""
    for model, entry in start_models(layout).items():
        print(f"start model {model}: {entry['checkpoint']} sha256 {entry['sha256'][:16]}...", flush=True)
    plan(pilot, write=False, layout=layout)
    run_sweep(VALIDATION, layout)
    choose(layout)
    for name in TEST_SWEEPS:
        run_sweep(name, layout)
    report(layout)


def commands(layout: Layout = VERDICT) -> None:
    """The verdict as separate commands (each ``robprune sweep`` line can run in N processes)."""
    script = shown(Path(__file__))
    lines = [
        f"python {script} plan",
        " ".join(["robprune", *sweep_command(VALIDATION, layout)[3:]]),
        f"python {script} choose",
        *(" ".join(["robprune", *sweep_command(name, layout)[3:]]) for name in TEST_SWEEPS),
        f"python {script} report",
    ]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=["plan", "run", "commands", "choose", "report", "smoke"])
    parser.add_argument("--pilot", type=Path, default=PILOT, help="results.json whose paired sd the plan uses")
    parser.add_argument("--write", action="store_true", help="plan: write benchmarks/results/fmnist_verdict/plan.json")
    parser.add_argument("--out", type=Path, help="smoke: the folder of its sweep copies, runs and results")
    parser.add_argument("--fmnist-root", type=Path, help="smoke: the Fashion-MNIST IDX files (default the recipes')")
    args = parser.parse_args(argv)
    if args.action == "smoke":
        from fmnist_verdict_smoke import smoke_layout

        if args.out is None:
            parser.error("smoke needs --out FOLDER")
        run(args.pilot, smoke_layout(VERDICT, args.out.resolve(), args.fmnist_root))
    elif args.action == "plan":
        plan(args.pilot, args.write)
    elif args.action == "commands":
        commands()
    elif args.action == "choose":
        choose()
    elif args.action == "report":
        report()
    else:
        run(args.pilot)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
