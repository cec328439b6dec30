"""One trial: ``robprune run`` of the base recipe with the trial's overrides, in a child process.

Why a child process and not the pipeline's Python entry in the worker: a trial is then exactly the
command a user runs (same exit codes, same folder rules), each trial starts with fresh process
state (threads, seeds, MLflow's active run, memory), a crash or an out-of-memory kill fails that
trial and not the worker, and a worker interrupted or killed stops its trial cleanly: the child
gets one SIGTERM (:mod:`robprune_deploy.cli.sweep_child`), ends its MLflow runs KILLED and releases
the run folder, which the retry then resumes with ``--resume``. The cost is the child's start-up
(imports), seconds against the minutes of a real trial.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robprune_deploy.pipeline.ownership import LOCK_FILE, STATE_FILE

CHILD_MODULE = "robprune_deploy.cli.sweep_child"
"""``robprune`` that stops when its worker dies (see that module)."""
WORKER_PID_ENV = "ROBPRUNE_SWEEP_WORKER_PID"
STOP_WAIT_S = 120
"""How long an interrupted worker waits for its trial's run to end cleanly before killing it."""
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._=+-]+")
_LEAKED_MLFLOW = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@dataclass(frozen=True)
class Outcome:
    code: int
    seconds: float
    error: str | None
    """The run's last ``error:`` line (or the last line of its output) when ``code`` is not 0."""


def value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value


def folder_name(origin: int, params: dict[str, Any]) -> str:
    """``007_swap_fraction=0.05_seed=1``: the trial's first number and its settings (last part of
    each dotted path), in characters every file system takes; a retry keeps its trial's folder."""
    parts = [f"{key.rsplit('.', 1)[-1]}={value_text(value)}" for key, value in sorted(params.items())]
    slug = _NAME_CHARS.sub("-", "_".join(parts)).strip("-")[:100]
    return f"{origin:03d}_{slug}" if slug else f"{origin:03d}"


def command(recipe: Path, folder: Path, overrides: list[str], tracking_uri: str | None, resume: bool) -> list[str]:
    argv = [sys.executable, "-m", CHILD_MODULE, "--quiet", "run", str(recipe), "--out", str(folder)]
    if tracking_uri is not None:
        argv += ["--tracking-uri", tracking_uri]
    else:
        argv += ["--set", "tracking.enabled=false"]
    if resume:
        argv.append("--resume")
    for item in overrides:
        argv += ["--set", item]
    return argv


def resumable(folder: Path) -> bool:
    """An earlier attempt claimed the folder: ``--resume`` continues after its completed stages (and
    refuses, exit 2, if the folder belongs to another recipe)."""
    return (folder / STATE_FILE).is_file()


def release_lock_of_dead_worker(folder: Path, predecessor: dict[str, Any]) -> bool:
    """Remove the folder lock left by the run of a trial whose worker was declared dead.

    The folder lock takes over a dead holder on the same machine by itself; a holder on another
    machine cannot be checked from here. So the lock is removed only when it is exactly the one
    the dead attempt's run took (that machine and that process id), which the heartbeat has
    declared gone.
    """
    lock = folder / LOCK_FILE
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    worker = predecessor.get("robprune.worker") or {}
    if not isinstance(holder, dict) or holder.get("host") == socket.gethostname():
        return False
    if holder.get("host") == worker.get("host") and holder.get("pid") == predecessor.get("robprune.child_pid"):
        lock.unlink(missing_ok=True)
        return True
    return False


def child_environment(run_id: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LEAKED_MLFLOW}
    env[WORKER_PID_ENV] = str(os.getpid())
    if run_id is not None:
        env["MLFLOW_RUN_ID"] = run_id  # the pipeline takes this run as its own (tracking/project.py)
    return env


def execute(argv: list[str], log: Path, env: dict[str, str], on_start: Any = None) -> Outcome:
    """Run ``argv``, its output appended to ``log``; ``on_start(pid)`` is called once it runs.

    An interrupt (Ctrl-C, SIGTERM) of the worker stops the child with one SIGTERM and waits for it
    (:data:`STOP_WAIT_S`), then is raised again.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "ab") as handle:
        offset = handle.tell()
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        handle.write(f"\n=== {stamp} {' '.join(argv[3:])}\n".encode())
        handle.flush()
        # Its own session: a Ctrl-C at the terminal reaches the worker only, which stops the
        # child with exactly one SIGTERM (a second signal could cut its cleanup short).
        child = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        try:
            if on_start is not None:
                on_start(child.pid)
            code = child.wait()
        except BaseException:
            _stop(child)
            raise
    seconds = time.monotonic() - start
    return Outcome(code, seconds, None if code == 0 else last_error(log, offset))


def _stop(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def last_error(log: Path, offset: int) -> str:
    """The last ``error:`` line the attempt printed, else its last line."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    errors = [line for line in lines if line.startswith("error: ")]
    return (errors[-1].removeprefix("error: ") if errors else (lines[-1] if lines else "no output"))[:300]
