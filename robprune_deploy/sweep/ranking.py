"""``sweep.json`` and the final table: the study's trials sorted by the objective.

Both are rebuilt from the study after every trial by whichever worker finished it, so they always
show the study, not one worker's share. Skipped trials (see :mod:`robprune_deploy.sweep.claims`)
are left out: they never ran.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from robprune_deploy.sweep.claims import RETRY_OF, is_skipped

SWEEP_JSON = "sweep.json"
FOLDER_ATTR = "robprune.run_folder"
RUN_ID_ATTR = "robprune.mlflow_run_id"
SECONDS_ATTR = "robprune.seconds"
ERROR_ATTR = "robprune.error"


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": dict(trial.params),
        "value": trial.value if trial.state == TrialState.COMPLETE else None,
        "run_folder": trial.user_attrs.get(FOLDER_ATTR),
        "mlflow_run_id": trial.user_attrs.get(RUN_ID_ATTR),
        "seconds": trial.user_attrs.get(SECONDS_ATTR),
        "error": trial.user_attrs.get(ERROR_ATTR)
        or ("ended without a result (its worker stopped or died)" if trial.state == TrialState.FAIL else None),
        "retry_of": trial.system_attrs.get(RETRY_OF),
    }


def ranked(trials: Sequence[FrozenTrial], direction: str) -> list[dict[str, Any]]:
    """Completed trials best first, then the others by number."""
    records = [trial_record(t) for t in trials if not is_skipped(t)]
    sign = -1.0 if direction == "maximize" else 1.0
    done = sorted((r for r in records if r["value"] is not None), key=lambda r: (sign * r["value"], r["number"]))
    return done + sorted((r for r in records if r["value"] is None), key=lambda r: r["number"])


def document(header: dict[str, Any], trials: Sequence[FrozenTrial], direction: str, complete: bool) -> dict[str, Any]:
    records = ranked(trials, direction)
    best = records[0] if records and records[0]["value"] is not None else None
    states = [r["state"] for r in records]
    counts = {state: states.count(state) for state in sorted(set(states))}
    return {**header, "complete": complete, "counts": counts, "best": best, "trials": records}


def _cell(value: Any, digits: str = ".4f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, digits) if math.isfinite(value) else str(value)
    return str(value)


def print_table(sweep: dict[str, Any], searched: list[str], metric: str, title: str) -> None:
    table = Table(title=title)
    for column in ("trial", "state", metric, *(key.rsplit(".", 1)[-1] for key in searched), "s", "run folder"):
        table.add_column(column)
    for record in sweep["trials"]:
        seconds = record["seconds"]
        table.add_row(
            str(record["number"]),
            record["state"],
            _cell(record["value"]),
            *(_cell(record["params"].get(key), ".4g") for key in searched),
            "-" if seconds is None else f"{seconds:.0f}",
            str(record["run_folder"] or "-"),
        )
    Console(width=160).print(table)


def relative(folder: Path, out: Path) -> str:
    try:
        return str(folder.relative_to(out))
    except ValueError:
        return str(folder)
