"""The run's state: its output folder, whether it resumes, and what ``state.json`` records as done.

Which stages come after which is the runner's knowledge (:data:`~robprune_deploy.pipeline.driver.STAGES`);
this module only reads and writes the record (:mod:`robprune_deploy.pipeline.ownership` names the files).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robprune_deploy.pipeline.ownership import STATE_FILE, owner_record, read_state, write_state
from robprune_deploy.recipe import Recipe


@dataclass
class RunState:
    """One run's folder and its record of completed stages.

    :param out_dir: where stage outputs, ``state.json`` and ``summary.json`` are written.
    :param resume: skip stages recorded as completed in ``state.json`` and resume training stages
        from their last per-epoch checkpoint.
    :param force: clear the folder's stage files when it holds another recipe's results
        (see :mod:`robprune_deploy.pipeline.ownership`).
    :param recipe_source: the recipe file, recorded as the folder's owner and named in refusals.
    :param writes: this process writes the folder (rank 0 under ``torchrun``); the others only read it.
    """

    recipe: Recipe
    out_dir: Path
    resume: bool = False
    force: bool = False
    recipe_source: str | None = None
    writes: bool = True

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)

    @property
    def state_file(self) -> Path:
        return self.out_dir / STATE_FILE

    def completed(self) -> dict[str, Any]:
        """``{stage: figures}`` of the stages ``state.json`` records as complete."""
        state = read_state(self.out_dir)
        return dict(state["stages"]) if state is not None else {}

    def is_done(self, stage: str) -> bool:
        return self.resume and stage in self.completed()

    def mark_done(self, stage: str, info: dict[str, Any] | None = None, later: Iterable[str] = ()) -> None:
        """Record ``stage`` as complete with its figures; the ``later`` stages, computed from its
        former output, are no longer complete."""
        if not self.writes:
            return
        state = read_state(self.out_dir) or {"owner": owner_record(self.recipe, self.recipe_source), "stages": {}}
        stages = state["stages"]
        for name in later:
            stages.pop(name, None)
        stages[stage] = info or {}
        write_state(self.out_dir, state)
