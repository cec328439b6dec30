"""The README's quick start, run and timed as a newcomer runs it, and its figures recorded.

    python benchmarks/quick_start.py                  # writes benchmarks/results/quick_start.json
    python benchmarks/quick_start.py --busy 2         # the same beside two busy processes (its own file)

One ``robprune run recipes/digits_hydra_channel.yaml`` child process (the thread policy as a user gets
it: no ``OMP_NUM_THREADS``), its MLflow store inside the output folder. Recorded: wall and CPU time
(user + system of the child and its children), the time of each stage from the run's progress lines,
the load when it started, and the accuracies of the shipped and the dense model from ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from provenance import provenance
from result_tables import column, results_file, table, text_column
from thread_policy import busy_processes

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "digits_hydra_channel.yaml"
RESULTS = REPO / "benchmarks" / "results" / "quick_start.json"
STAGE_DONE = re.compile(r"^progress: (\w[\w-]*): done in ([\d.]+) (s|min)")


def stage_times(stderr: str) -> dict[str, float]:
    """``{stage: seconds}`` from the run's ``progress: <stage>: done in ...`` lines."""
    times: dict[str, float] = {}
    for line in stderr.splitlines():
        match = STAGE_DONE.match(line)
        if match:
            name, value, unit = match.groups()
            times[name] = float(value) * (60 if unit == "min" else 1)
    return times


def run_quick_start(recipe: Path, out: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS" and not k.startswith("MLFLOW_")}
    command = [
        sys.executable, "-m", "robprune_deploy.cli.main", "run", str(recipe), "--out", str(out), "--force",
        "--set", f"tracking.tracking_uri=sqlite:///{out.resolve() / 'mlflow.db'}",
    ]  # fmt: skip
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, start, load = usage.ru_utime + usage.ru_stime, time.perf_counter(), os.getloadavg()[0]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)  # as the README runs it
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):  # 1: ran, the gate failed (recorded)
        raise SystemExit(f"error: the quick start exited {proc.returncode}: {proc.stderr[-2000:]}")
    return {
        "exit_code": proc.returncode,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu,
        "load_at_start": round(load, 2),
        "stages_s": stage_times(proc.stderr),
        "threads": next((line for line in proc.stderr.splitlines() if line.startswith("threads:")), None),
    }


def _kb(path: Path) -> float:
    return path.stat().st_size / 1024


def figures_table(summary: dict[str, Any], pruned: str) -> dict[str, Any]:
    def row(name: str, prefix: str) -> list[Any]:
        keys = ("clean_acc", "pgd_acc", "apgd_ce_acc", "apgd_t_acc", "autoattack_acc")
        values = [summary.get(f"{prefix}{k}") for k in keys]
        return [name, *(None if v is None else 100 * v for v in values), summary.get(f"{prefix}median_linf_distance")]

    columns = [
        text_column("model"),
        column("clean", "{:.1f}"),
        column("PGD-20", "{:.1f}"),
        column("APGD-CE", "{:.1f}"),
        column("+ APGD-T (3 targets)", "{:.1f}"),
        column("+ Square 1,000 = AutoAttack-fast", "{:.1f}"),
        column("median L-inf distance", "{:.3f}"),
    ]
    rows = [
        row("dense (onnxruntime)", "onnx.dense_"),
        row(f"{pruned}, physically removed (onnxruntime)", "onnx."),
    ]
    return table(columns, rows)


def time_table(timing: dict[str, Any], busy: int) -> dict[str, Any]:
    machine = "no busy processes added" if busy == 0 else f"beside {busy} busy processes"
    machine += f", 1-min load average {timing['load_at_start']:.1f} at start"
    stages = ", ".join(f"{name} {seconds:.0f}" for name, seconds in timing["stages_s"].items())
    columns = [text_column("machine"), column("wall s", "{:.0f}"), column("CPU s", "{:.0f}"), text_column("stages, s")]
    return table(columns, [[machine, timing["wall_s"], timing["cpu_s"], stages]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "quick_start", help="the run's folder")
    parser.add_argument("--busy", type=int, default=0, help="busy processes beside the run (default 0: idle)")
    parser.add_argument(
        "--json", type=Path, help=f"results file (default {RESULTS}; with --busy: quick_start_busy.json)"
    )
    args = parser.parse_args()
    target = args.json or (RESULTS if args.busy == 0 else RESULTS.with_name("quick_start_busy.json"))
    with busy_processes(args.busy):
        timing = run_quick_start(args.recipe, args.out)
    summary = json.loads((args.out / "summary.json").read_text())
    sizes = {"model.onnx": _kb(args.out / "model.onnx"), "dense.onnx": _kb(args.out / "dense.onnx")}
    recipe = yaml.safe_load((args.out / "recipe.yaml").read_text())  # the recipe as the run saved it
    eps, compression = recipe["attack"]["eps"], recipe["compression"]
    granularity = "channels" if compression["config"].get("granularity") == "channel" else "sparsity"
    pruned = f"{compression['algorithm'].upper()} {100 * compression['ratio']:.0f}% {granularity}"
    setup = (
        f"{summary.get('onnx.examples')} fixed test images, eps {eps}; clean / robust "
        "accuracy in %; AutoAttack-fast on the pruned and the dense model, the security curve and the "
        "indicators; runtime.threads auto"
    )
    document = results_file(
        provenance(),
        {"main": figures_table(summary, pruned), "time": time_table(timing, args.busy)},
        setup=setup,
        timing=timing,
        sizes_kb=sizes,
        gate_passed=summary.get("gate.passed"),
        summary={k: v for k, v in summary.items() if not k.startswith(("paths.", "mlflow."))},
    )
    target.write_text(json.dumps(document, indent=2) + "\n")
    print(f"quick start: wall {timing['wall_s']:.0f} s, CPU {timing['cpu_s']:.0f} s; {timing['stages_s']}")
    print(f"written: {target}")


if __name__ == "__main__":
    main()
