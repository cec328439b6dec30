"""What every stage of a pipeline run shares: the run's data, its state, its tracker and progress.

:class:`RunContext` is the run's data (:class:`~robprune_deploy.pipeline.run_data.RunData`: splits,
loaders, model factory) with the run's state (:class:`~robprune_deploy.pipeline.run_state.RunState`:
folder, resume, ownership) and the tracker it reports to. The gate and the Python API read a
:class:`RunData` alone; only a run that writes a folder makes a context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from robprune_deploy import distributed
from robprune_deploy.pipeline.recipe_model import recipe_model
from robprune_deploy.pipeline.run_data import RunData, apply_process_settings, resolve_device
from robprune_deploy.pipeline.run_state import RunState
from robprune_deploy.progress import StageLines, restored, stage_lines
from robprune_deploy.recipe import Recipe
from robprune_deploy.tracking import NullTracker, Tracker

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["RunContext", "recipe_model", "resolve_device"]


class RunContext(RunData):
    """The run's data, plus :attr:`state` (its folder), :attr:`tracker` and progress lines.

    :param recipe: the validated recipe (overrides applied).
    :param out_dir, resume, force, recipe_source: the run's :class:`RunState`.
    :param tracker: where stages log (MLflow, or nothing).
    :param sign_key: the Ed25519 key the gate stages sign their ``release.json`` with (``--sign-key``).

    The output folder is created only once the inputs passed :meth:`preflight` (by
    :func:`~robprune_deploy.pipeline.ownership.owned_output`, or by the first file written).

    Every command makes one, so creating it joins the ``torchrun`` process group when there is one
    and applies the recipe's process settings (once; :func:`apply_process_settings`): :attr:`threads`
    is the thread choice.
    """

    def __init__(
        self,
        recipe: Recipe,
        out_dir: Path,
        tracker: Tracker | None = None,
        resume: bool = False,
        show_progress: bool = True,
        force: bool = False,
        recipe_source: str | None = None,
        sign_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.env, device = distributed.initialize(resolve_device(recipe.device))
        super().__init__(recipe, device=device, distributed=self.env.enabled)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
        self.state = RunState(recipe, Path(out_dir), resume, force, recipe_source, writes=self.env.is_main)
        self.tracker: Tracker = tracker if tracker is not None else NullTracker()
        self.show_progress = show_progress
        self.sign_key = sign_key
        self.threads = apply_process_settings(recipe, self, announce=show_progress)
        self.summary: dict[str, Any] = {}
        self.history: dict[str, list[tuple[int, dict[str, float]]]] = {}
        self._stage_lines: dict[str, StageLines] = {}

    @property
    def out_dir(self) -> Path:
        return self.state.out_dir

    @property
    def resume(self) -> bool:
        return self.state.resume

    @resume.setter
    def resume(self, value: bool) -> None:
        self.state.resume = value

    @property
    def is_main(self) -> bool:
        """Rank 0, the only process that writes files and talks to MLflow."""
        return self.env.is_main

    @contextlib.contextmanager
    def stage(self, name: str, epochs: int | None = None) -> Iterator[StageLines]:
        """One stage: its nested tracker run, and its progress lines on stderr (rank 0, not
        ``--quiet``): started, one per epoch (:meth:`record_epoch`), done with its time and the
        figures noted on the object yielded."""
        with self.tracker.stage(name), stage_lines(name, self.show_progress and self.is_main, epochs) as lines:
            self._stage_lines[name] = lines
            try:
                yield lines
            finally:
                self._stage_lines.pop(name, None)

    def restored(self, name: str) -> None:
        """Say that stage ``name`` was completed by an earlier attempt and is taken from the folder."""
        restored(name, self.show_progress and self.is_main)

    def record_epoch(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        """Keep per-epoch metrics for the plots, log them to the tracker, and print the epoch's line.

        ``epoch`` counts from 0 as the training loops do; MLflow steps, plots, progress bars and
        lines all show epoch numbers from 1 (step ``epoch + 1``), so "epoch 3" means the same thing
        everywhere.
        """
        self.history.setdefault(stage, []).append((epoch, dict(metrics)))
        self.tracker.log_metrics(metrics, step=epoch + 1)
        lines = self._stage_lines.get(stage)
        if lines is not None:
            lines.epoch(epoch, metrics)

    def preflight(self) -> None:
        """Check every input a run will read before anything is written
        (:func:`~robprune_deploy.pipeline.run_preflight.preflight`), and note the resolved paths."""
        from robprune_deploy.pipeline.run_preflight import preflight

        self.summary.update(preflight(self, self.out_dir))
