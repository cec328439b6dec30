"""What every committed benchmark result records about how it was made: the command, the commit,
the date, the hardware and the package versions, so a table can be regenerated and compared."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PACKAGES = (
    "torch",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "onnx",
    "nncf",
    "torch-pruning",
    "mlflow",
    "numpy",
    "optuna",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """The record of this process: ``argv`` (default ``sys.argv``) as a shell command from the repository root."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=REPO).stdout)
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    return {
        "command": shlex.join(["python", str(shown), *(sys.argv[1:] if argv is None else argv)]),
        "commit": commit + ("-dirty" if dirty else ""),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "machine": platform.machine(),
            "system": platform.system(),
        },
        "packages": _versions(),
    }
