"""Wall and CPU time of torch's default thread count vs the thread policy (``runtime.threads: auto``),
on an idle machine and beside busy processes.

    python benchmarks/thread_policy.py --fmnist-root /work/shared/datasets/fashion-mnist   # the README's figures
    python benchmarks/thread_policy.py --workloads quick_start --conditions idle \\
        --digits-command pretrain --set pretrain.epochs=1 --repeats 1                    # a smoke run

Workloads: ``quick_start``, the README's first run (``robprune run recipes/digits_hydra_channel.yaml``: it
prunes the shipped digits start model),
``digits_s2ap``, the unstructured digits run (``recipes/digits_s2ap.yaml``), and ``fmnist``, one
adversarial pretraining epoch of ``recipes/fmnist/s2ap_u90.yaml`` (55,000 images, PGD-10;
``--fmnist-train-images`` takes a fixed subset of them).
Conditions: ``idle``, and ``busy``: beside ``--busy`` processes that each keep one core busy (a
pure-Python loop, as a colleague's single-threaded job would). Threads: ``default`` gives torch and
onnxruntime torch's default count (the machine's cores; what a run got before the policy; onnxruntime's
spinning follows the policy's rule either way), ``policy`` is ``runtime.threads: auto`` with no
``OMP_NUM_THREADS`` in the environment.

Each measurement is one ``robprune`` child process: its wall time and its CPU time (user + system,
``resource.getrusage(RUSAGE_CHILDREN)`` before and after). Results are written to ``--json`` after
every measurement, so an interrupted benchmark keeps what it measured; ``--resume`` keeps the rows
already in ``--json`` and measures only the missing ones (each row names the commit and date it was
measured at).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from provenance import provenance
from result_tables import column, results_file, table, text_column

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "thread_policy.json"
BUSY_LOOP = "while True: pass"
DIGITS_RECIPES = {
    "quick_start": "digits_hydra_channel.yaml",
    "digits_s2ap_channel": "digits_s2ap_channel.yaml",
    "digits_s2ap": "digits_s2ap.yaml",
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def torch_default_threads() -> int:
    """torch's intra-op threads in a fresh process (``OMP_NUM_THREADS`` is unset by :func:`main`)."""
    command = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip())


@contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` processes that each keep one core busy until the block ends."""
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]
    try:
        time.sleep(2.0 if count else 0.0)  # let the load average notice them before the policy looks
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def workload_command(name: str, args: argparse.Namespace, out: Path) -> list[str]:
    robprune = [sys.executable, "-m", "robprune_deploy.cli.main"]
    sets = [item for text in args.overrides for item in ("--set", text)]
    common = ["--out", str(out), "--quiet", "--set", "tracking.enabled=false"]
    if name in DIGITS_RECIPES:
        return [*robprune, args.digits_command, str(ROOT / "recipes" / DIGITS_RECIPES[name]), *common, *sets]
    fmnist = [item for text in fmnist_overrides(args) for item in ("--set", text)]
    return [*robprune, "pretrain", str(ROOT / "recipes" / "fmnist" / "s2ap_u90.yaml"), *common, *fmnist, *sets]


def fmnist_overrides(args: argparse.Namespace) -> list[str]:
    if args.fmnist_root is None:
        raise SystemExit("error: --fmnist-root: the fmnist workload needs the folder of the four IDX files")
    subset = [f"data.train_subset={args.fmnist_train_images}"] if args.fmnist_train_images else []
    return ["pretrain.epochs=1", f"data.root={args.fmnist_root}", *subset]


def measure(command: list[str], threads: str, default_threads: int) -> dict[str, Any]:
    """One child run: wall and CPU seconds, and the threads it was given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    setting = str(default_threads) if threads == "default" else "auto"
    command = [*command, "--set", f"runtime.threads={setting}"]
    load = os.getloadavg()[0]
    cpu, start = _children_cpu(), time.perf_counter()
    # from the repository root, as the README runs it: the quick start's model.checkpoint is relative
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return {"runtime.threads": setting, "load_at_start": round(load, 2), "wall_s": wall, "cpu_s": cpu}


def earlier_measurements(path: Path) -> list[dict[str, Any]]:
    """The rows of an earlier results file, each stamped with the commit and date it was measured at."""
    if not path.is_file():
        return []
    earlier = json.loads(path.read_text())
    return [{"measured_at": _stamp(earlier["provenance"]), **row} for row in earlier["measurements"]]


def _stamp(provenance: dict[str, Any]) -> dict[str, Any]:
    return {"commit": provenance["commit"], "date": provenance["date"], "cpu": provenance["hardware"]["cpu"]}


def policy_prediction(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """What ``auto`` chooses here now for the workload's recipe (the child chooses the same way)."""
    from robprune_deploy.pipeline.recipe_threads import auto_work_macs
    from robprune_deploy.recipe import load_recipe
    from robprune_deploy.runtime import choose_threads

    recipe_file = ROOT / "recipes" / DIGITS_RECIPES.get(name, "fmnist/s2ap_u90.yaml")
    extra = fmnist_overrides(args) if name == "fmnist" else []
    recipe = load_recipe(recipe_file, [*extra, *args.overrides])
    return choose_threads("auto", work_macs=auto_work_macs(recipe)).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads", nargs="+", choices=[*DIGITS_RECIPES, "fmnist"], default=["quick_start", "fmnist"]
    )
    parser.add_argument("--conditions", nargs="+", choices=["idle", "busy"], default=["idle", "busy"])
    parser.add_argument("--threads", nargs="+", choices=["default", "policy"], default=["default", "policy"])
    parser.add_argument("--busy", type=int, default=2, help="busy processes of the busy condition (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each combination (default 2)")
    parser.add_argument("--digits-command", choices=["run", "pretrain"], default="run", help="default run")
    parser.add_argument("--fmnist-root", type=Path, default=None, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument(
        "--fmnist-train-images", type=int, default=None, help="fmnist: a fixed subset of the training images"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    parser.add_argument(
        "--resume", action="store_true", help="keep the rows already in --json and measure only the missing ones"
    )
    args = parser.parse_args()
    # The policy is measured as a user gets it: no OMP_NUM_THREADS for auto to respect.
    os.environ.pop("OMP_NUM_THREADS", None)

    default_threads = torch_default_threads()
    report = results_file(
        provenance(),
        renderer="thread_policy:tables",
        machine={
            "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "torch_default_threads": default_threads,
        },
        arguments={
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("json", "resume")
        },
        measurements=earlier_measurements(args.json) if args.resume else [],
    )
    if report["measurements"]:
        where = sorted(
            {f"{r['measured_at']['commit'][:7]} ({r['measured_at']['cpu']})" for r in report["measurements"]}
        )
        report["provenance"]["note"] = (
            f"resumed: the earlier rows were measured at {', '.join(where)}; each row's measured_at names its "
            "commit, date and CPU, and rows compare only with rows of the same CPU"
        )
    done = {(r["workload"], r["condition"], r["threads"], r["repeat"]) for r in report["measurements"]}
    stamp = _stamp(report["provenance"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for name in args.workloads:
        for condition in args.conditions:
            with busy_processes(args.busy if condition == "busy" else 0):
                prediction = policy_prediction(name, args)
                for repeat in range(args.repeats):
                    for threads in args.threads:
                        if (name, condition, threads, repeat) in done:
                            continue
                        with tempfile.TemporaryDirectory(prefix="thread-policy-") as folder:
                            result = measure(
                                workload_command(name, args, Path(folder) / "out"), threads, default_threads
                            )
                        row = {"workload": name, "condition": condition, "threads": threads, "repeat": repeat}
                        row.update(result, measured_at=stamp)
                        if threads == "policy":
                            row["policy_choice"] = prediction
                        report["measurements"].append(row)
                        args.json.write_text(json.dumps(report, indent=2) + "\n")
                        print(
                            f"{name:6} {condition:4} {threads:7} (runtime.threads={result['runtime.threads']:>4}): "
                            f"wall {result['wall_s']:7.1f} s, CPU {result['cpu_s']:7.1f} s, "
                            f"load at start {result['load_at_start']:.1f}",
                            flush=True,
                        )
    print(f"written: {args.json}")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _threads_cell(threads: str, run: dict[str, Any]) -> str:
    """``default (2)``, or ``policy (auto: 1)`` with what ``auto`` chose."""
    if threads == "policy" and "policy_choice" in run:
        return f"policy (auto: {run['policy_choice']['threads']})"
    return f"{threads} ({run['runtime.threads']})"


def tables(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One row per workload, condition and threads: mean wall and CPU seconds over the repeats, and
    the CPU time against the same workload's idle run under the policy (the goal: at most 1.2 busy)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in document["measurements"]:
        groups.setdefault((row["workload"], row["condition"], row["threads"]), []).append(row)
    rows = []
    for (workload, condition, threads), runs in groups.items():
        idle = groups.get((workload, "idle", "policy"))
        cpu = _mean([r["cpu_s"] for r in runs])
        rows.append(
            [
                runs[0].get("measured_at", {}).get("cpu", document["provenance"]["hardware"]["cpu"]),
                workload,
                condition,
                _threads_cell(threads, runs[0]),
                len(runs),
                _mean([r["wall_s"] for r in runs]),
                cpu,
                cpu / _mean([r["cpu_s"] for r in idle]) if idle else None,
                _mean([r["load_at_start"] for r in runs]),
            ]
        )
    columns = [
        text_column("CPU"),
        text_column("workload"),
        text_column("machine"),
        text_column("threads"),
        column("runs"),
        column("wall s", "{:.0f}"),
        column("CPU s", "{:.0f}"),
        column("CPU x idle policy", "{:.2f}"),
        column("1-min load average at start", "{:.1f}"),
    ]
    return {"main": table(columns, rows)}


if __name__ == "__main__":
    main()
