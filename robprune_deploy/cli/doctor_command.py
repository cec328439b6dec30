"""``robprune doctor``: is what a recipe asks for usable here? Exit 0 usable, 1 not, 2 bad input."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rich.console import Console
from rich.table import Table

from robprune_deploy.environment import Diagnosis, Status, diagnose
from robprune_deploy.recipe import Recipe, apply_overrides, load_recipe, validate_recipe

EXIT_USABLE, EXIT_UNUSABLE = 0, 1
_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def _recipe(args: argparse.Namespace) -> Recipe:
    if args.recipe is not None:
        recipe = load_recipe(args.recipe, args.overrides)
    else:
        recipe = validate_recipe(apply_overrides({}, args.overrides), "default recipe")
    uri = args.tracking_uri or (None if recipe.tracking.tracking_uri else os.environ.get("MLFLOW_TRACKING_URI"))
    if uri:
        recipe.tracking.tracking_uri = uri
    return recipe


def _environment_table(diagnosis: Diagnosis) -> Table:
    table = Table(title="environment", show_lines=False)
    table.add_column("component")
    table.add_column("state", overflow="fold")
    table.add_row("python", f"{diagnosis.python} ({diagnosis.platform})")
    for name, copies in diagnosis.packages.items():
        if not copies:
            table.add_row(name, "[dim]not installed[/dim]")
        for copy in copies:
            where = f" [dim]({copy.location})[/dim]" if len(copies) > 1 or name.startswith("onnxruntime") else ""
            table.add_row(name, copy.version + where)
    gpus = diagnosis.torch
    table.add_row("torch CUDA build", f"CUDA {gpus.cuda_build}" if gpus.cuda_build else "none (CPU-only build)")
    table.add_row("torch cuDNN", str(gpus.cudnn) if gpus.cudnn else "none")
    for gpu in gpus.gpus:
        table.add_row(
            f"GPU {gpu.index}",
            f"{gpu.name}, compute {gpu.capability}, {gpu.memory_gib} GiB, bf16 {'yes' if gpu.bf16 else 'no'}",
        )
    if not gpus.gpus:
        table.add_row("GPUs", f"none: {gpus.reason}")
    if gpus.nccl:
        table.add_row("NCCL", gpus.nccl)
    ort = diagnosis.onnxruntime
    if ort.error:
        table.add_row("onnxruntime", f"[red]{ort.error}[/red]")
    else:
        build = f"{ort.package} {ort.version}" + (f", built for CUDA {ort.cuda_build}" if ort.cuda_build else "")
        table.add_row("onnxruntime (imported)", build)
        table.add_row("execution providers", ", ".join(ort.available))
        if ort.preload:
            table.add_row("preload_dlls()", ort.preload)
        for provider, probe in ort.probes.items():
            state = "[green]a session runs on it[/green]" if probe.works else f"[red]falls back[/red]: {probe.reason}"
            table.add_row(provider, state)
    for name, devices in diagnosis.runtimes.items():  # OpenVINO's devices, and any other runtime's
        table.add_row(f"runtime {name}", ", ".join(devices) or "no device")
    table.add_row("threads", diagnosis.threads.describe())
    track = diagnosis.tracking
    answer = {True: "answers", False: "[red]no answer[/red]", None: "not checked"}[track.answers]
    table.add_row("tracking URI", f"{track.uri}: {answer} ({track.detail})")
    return table


def _checks_table(diagnosis: Diagnosis, source: str) -> Table:
    table = Table(title=f"what {source} asks for")
    for column in ("check", "status", "detail"):
        table.add_column(column, overflow="fold")
    for check in diagnosis.checks:
        style = _STYLE[check.status]
        table.add_row(check.name, f"[{style}]{check.status.value}[/{style}]", check.detail)
    return table


def handle_doctor(args: argparse.Namespace) -> int:
    recipe = _recipe(args)
    diagnosis = diagnose(recipe, timeout=args.timeout)
    source = f"recipe {args.recipe}" if args.recipe else "the default recipe"
    if args.json:
        data: dict[str, Any] = {"recipe": str(args.recipe) if args.recipe else None, **diagnosis.to_dict()}
        print(json.dumps(data, indent=2, default=str))
    else:
        console = Console(width=max(120, Console().width))
        console.print(_environment_table(diagnosis))
        console.print(_checks_table(diagnosis, source))
        failing = [f"{c.name}: {c.detail}" for c in diagnosis.checks if c.status is Status.FAIL]
        if failing:
            console.print(f"[bold red]not usable[/bold red] for {source}:", highlight=False)
            for line in failing:
                console.print(f"  {line}", highlight=False, soft_wrap=True)
        else:
            console.print(f"[green]usable[/green] for {source}", highlight=False)
    return EXIT_USABLE if diagnosis.usable else EXIT_UNUSABLE
