"""Stages and the runner that drives them.

A :class:`Stage` reads named values (models, measurements) that earlier stages put in the run's
:data:`Values`, writes its own, and returns a :class:`StageRecord`: the ``summary.json`` entries
it measured. The runner, not the stage, decides whether it runs or is restored from the folder
(``--resume``), opens its nested MLflow run and progress lines, records it in ``state.json`` and
merges its record into the summary, so every stage is driven the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from robprune_deploy.pipeline.summary_schema import Figures, check_summary_keys
from robprune_deploy.progress import StageLines, stage_lines

if TYPE_CHECKING:
    from robprune_deploy.pipeline.context import RunContext

Values = dict[str, Any]
"""What the stages hand on to each other in one process, by name (``model``, ``result``, ...)."""

Tracking = Literal["recorded", "nested", "parent", "quiet"]
"""How a stage is tracked: ``recorded``, a nested MLflow run and an entry in ``state.json`` (so
``--resume`` may restore it); ``nested``, a nested run only (it always runs again); ``parent``,
its figures go to the pipeline's own run, with a progress line; ``quiet``, the same without one."""


@dataclass
class StageRecord:
    """What one stage measured: its ``summary.json`` entries, and tags for the pipeline's run."""

    stage: str
    figures: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, stage: str, figures: Figures, tags: dict[str, str] | None = None) -> StageRecord:
        """The record of a stage whose figures are typed."""
        return cls(stage, figures.summary_items(), dict(tags or {}))

    def summary_items(self) -> dict[str, Any]:
        """The entries, each checked against the stage's keys in :mod:`~robprune_deploy.pipeline.summary_schema`."""
        check_summary_keys(self.stage, self.figures)
        return dict(self.figures)


class Stage(Protocol):
    """One step of the pipeline.

    :attr name: its name in ``state.json``, MLflow and the progress lines.
    :attr inputs: the :data:`Values` it reads; :attr outputs: those it writes (also when restored).
    :attr tracking: see :data:`Tracking`. :attr main_only: only rank 0 runs it (after training).
    """

    @property
    def name(self) -> str: ...
    @property
    def inputs(self) -> tuple[str, ...]: ...
    @property
    def outputs(self) -> tuple[str, ...]: ...
    @property
    def tracking(self) -> Tracking: ...
    @property
    def main_only(self) -> bool: ...

    def applies(self, ctx: RunContext) -> bool:
        """Whether the recipe asks for this stage at all (the INT8 ones: ``quantize.enabled``)."""
        ...

    def epochs(self, ctx: RunContext) -> int | None:
        """Epochs its progress line counts, or ``None``."""
        ...

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord: ...

    def restore(self, ctx: RunContext, values: Values) -> StageRecord | None:
        """Take the stage's outputs from the folder (its figures from ``state.json``), or ``None``
        when the folder does not hold them; called only for a stage ``state.json`` records as done."""
        ...


class PipelineRunner:
    """Runs stages of ``order`` (the run order, which is also the resume order) on one context."""

    def __init__(self, ctx: RunContext, order: Sequence[Stage]) -> None:
        self.ctx = ctx
        self.order = tuple(order)
        self.values: Values = {}
        self.records: list[StageRecord] = []

    def names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.order)

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.order if stage.name == name)

    def run_all(self) -> None:
        for stage in self.order:
            self.run(stage)

    def run_through(self, name: str) -> None:
        """Run the stages up to ``name``; those before it are restored from the folder when complete
        (as with ``--resume``), ``name`` itself as the context's ``resume`` says (a stage command)."""
        last = self.names().index(name)
        with self._resuming():
            for stage in self.order[:last]:
                self.run(stage)
        self.run(self.order[last])

    @contextlib.contextmanager
    def _resuming(self) -> Iterator[None]:
        state = self.ctx.state
        resume, state.resume = state.resume, True
        try:
            yield
        finally:
            state.resume = resume

    def run(self, stage: Stage, *, asked: bool = False) -> StageRecord | None:
        """Run (or restore) ``stage`` and merge its record into ``ctx.summary``; ``None`` where it
        does not apply (another recipe, or a rank that does not write).

        :param asked: a command asks for the stage by name, whether the recipe enables it or not.
        """
        ctx = self.ctx
        if (stage.main_only and not ctx.is_main) or not (asked or stage.applies(ctx)):
            return None
        missing = [name for name in stage.inputs if name not in self.values]
        if missing:
            raise RuntimeError(f"stage {stage.name} needs {', '.join(missing)} from an earlier stage")
        record = stage.restore(ctx, self.values) if ctx.state.is_done(stage.name) else None
        if record is not None:
            ctx.restored(stage.name)
        elif stage.tracking in ("parent", "quiet"):
            with stage_lines(stage.name, ctx.show_progress and ctx.is_main and stage.tracking == "parent") as lines:
                record = stage.run(ctx, self.values, lines)
        else:
            with ctx.stage(stage.name, stage.epochs(ctx)) as lines:
                record = stage.run(ctx, self.values, lines)
                if stage.tracking == "recorded":
                    ctx.state.mark_done(stage.name, record.figures, later=self._after(stage))
        unwritten = [name for name in stage.outputs if name not in self.values]
        if unwritten:  # a stage that promises a value and leaves it out is a bug, said where it happens
            raise RuntimeError(f"stage {stage.name} did not hand on {', '.join(unwritten)}")
        if record.tags:  # outside the stage's nested run: they tag the pipeline's own run
            ctx.tracker.set_tags(record.tags)
        ctx.summary.update(record.summary_items())
        self.records.append(record)
        return record

    def _after(self, stage: Stage) -> tuple[str, ...]:
        names = self.names()
        return names[names.index(stage.name) + 1 :] if stage.name in names else ()


class StageBase:
    """Defaults of a :class:`Stage`: runs everywhere, always applies, counts no epochs, never restored."""

    name: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    tracking: Tracking = "recorded"
    main_only: bool = False

    def applies(self, ctx: RunContext) -> bool:
        return True

    def epochs(self, ctx: RunContext) -> int | None:
        return None

    def restore(self, ctx: RunContext, values: Values) -> StageRecord | None:
        return None
