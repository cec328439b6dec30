"""What every stage of a pipeline run shares: recipe, device, data, output folder, tracker."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from robprune_deploy import distributed
from robprune_deploy.data import (
    VALIDATION_SEED,
    DatasetBundle,
    build_dataset,
    make_loader,
    seeded_subset,
    validation_split,
)
from robprune_deploy.errors import DatasetError, QuantizationError, RecipeError
from robprune_deploy.evaluation.memory_bound import bound_session_memory
from robprune_deploy.gate.validation import EvaluationData
from robprune_deploy.models import NormalizedClassifier, build_model
from robprune_deploy.pipeline.ownership import STAGE_ORDER, owner_record, read_state, write_state
from robprune_deploy.pipeline.recipe_threads import apply_recipe_threads
from robprune_deploy.progress import StageLines, restored, stage_lines
from robprune_deploy.recipe import Recipe
from robprune_deploy.tracking import NullTracker, Tracker


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU.

    :raises RecipeError: for ``cuda`` (or ``cuda:N``) on a machine where torch sees no such GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RecipeError(f"device: {name} asked for, but torch sees no CUDA GPU here; use device: auto or cpu")
        if device.index is not None and device.index >= count:
            raise RecipeError(f"device: {name} asked for, but this machine has {count} CUDA GPU(s) (cuda:0..)")
    return device


def recipe_model(recipe: Recipe, data: DatasetBundle) -> NormalizedClassifier:
    """The untrained model ``recipe`` asks for, shaped for ``data``."""
    return build_model(
        recipe.model.name,
        data.num_classes,
        data.input_shape[0],
        data.mean,
        data.std,
        recipe.data.channels,
        image_size=data.input_shape[1],
        kwargs=recipe.model.kwargs,
    )


@dataclass
class RunContext:
    """State shared by the stages of one pipeline run.

    :param recipe: the validated recipe (overrides applied).
    :param out_dir: where stage outputs, ``state.json`` and ``summary.json`` are written.
    :param resume: skip stages recorded as completed in ``state.json`` and resume training stages
        from their last per-epoch checkpoint.
    :param force: clear the folder's stage files when it holds another recipe's results
        (see :mod:`robprune_deploy.pipeline.ownership`).
    :param recipe_source: the recipe file, recorded as the folder's owner and named in refusals.

    The output folder is created only once the inputs passed :meth:`preflight` (by
    :func:`~robprune_deploy.pipeline.ownership.owned_output`, or by the first file written).

    Every command makes one, so creating it applies ``runtime.threads`` to the process (once;
    :mod:`robprune_deploy.pipeline.recipe_threads`): :attr:`threads` is the choice.
    """

    recipe: Recipe
    out_dir: Path
    tracker: Tracker = field(default_factory=NullTracker)
    resume: bool = False
    show_progress: bool = True
    force: bool = False
    recipe_source: str | None = None

    def __post_init__(self) -> None:
        bound_session_memory(self.recipe.evaluate.max_session_memory_mb)
        self.out_dir = Path(self.out_dir)
        self.env, self.device = distributed.initialize(resolve_device(self.recipe.device))
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
        self.threads = apply_recipe_threads(self.recipe, lambda: self.data, announce=self.show_progress)
        self.summary: dict[str, Any] = {}
        self.history: dict[str, list[tuple[int, dict[str, float]]]] = {}
        self._stage_lines: dict[str, StageLines] = {}

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

    @property
    def distributed(self) -> bool:
        """True under ``torchrun`` with more than one process."""
        return self.env.enabled

    @property
    def is_main(self) -> bool:
        """Rank 0, the only process that writes files and talks to MLflow."""
        return self.env.is_main

    @cached_property
    def data(self) -> DatasetBundle:
        d = self.recipe.data
        return build_dataset(d.name, d.root, d.image_size, d.augment)

    @cached_property
    def split_indices(self) -> tuple[list[int], list[int]]:
        """``(train, validation)`` indices into the training split: ``data.val_size`` images held
        out with the fixed :data:`~robprune_deploy.data.VALIDATION_SEED`, whatever the run seed."""
        return validation_split(len(self.data.train), self.recipe.data.val_size)  # type: ignore[arg-type]

    @cached_property
    def train_set(self) -> Any:
        """The training images left after the validation split, then ``data.train_subset`` of them."""
        train_idx, val_idx = self.split_indices
        remaining = Subset(self.data.train, train_idx) if val_idx else self.data.train
        return seeded_subset(remaining, self.recipe.data.train_subset, self.recipe.seed)

    @cached_property
    def val_set(self) -> Any | None:
        """The validation images (without augmentation), or ``None`` when ``data.val_size`` is 0."""
        _, val_idx = self.split_indices
        return Subset(self.data.unaugmented_train, val_idx) if val_idx else None

    @cached_property
    def test_set(self) -> Any:
        return seeded_subset(self.data.test, self.recipe.data.test_subset, self.recipe.evaluate.subset_seed)

    @property
    def eval_split(self) -> str:
        """The split of the final figures (``test``, or ``val`` in hyper-parameter sweeps)."""
        return self.recipe.data.eval_split

    def val_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The whole validation split as batches (kept in memory: it is evaluated after every epoch).

        :raises DatasetError: when the recipe has no validation split.
        """
        if self.val_set is None:
            raise DatasetError("data.val_size: 0, but a validation figure was asked for")
        return self._val_batches

    @cached_property
    def _val_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        assert self.val_set is not None
        return list(make_loader(self.val_set, self.recipe.data.eval_batch_size, shuffle=False))

    def train_loader(self, epoch: int) -> DataLoader:
        d = self.recipe.data
        return make_loader(
            self.train_set,
            d.batch_size,
            shuffle=True,
            seed=self.recipe.seed,
            epoch=epoch,
            num_workers=d.num_workers,
            distributed=self.distributed,
            pin_memory=self.device.type == "cuda",
        )

    def test_loader(self) -> DataLoader:
        return make_loader(self.test_set, self.recipe.data.eval_batch_size, shuffle=False)

    def eval_subset_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The fixed, seeded evaluation subset (``evaluate.num_examples``) of the :attr:`eval_split` as batches."""
        source = self.val_set if self.eval_split == "val" else self.test_set
        if source is None:
            raise DatasetError("data.eval_split: val needs a validation split (set data.val_size > 0)")
        subset = seeded_subset(source, self.recipe.evaluate.num_examples, self.recipe.evaluate.subset_seed)
        return list(make_loader(subset, self.recipe.data.eval_batch_size, shuffle=False))

    def evaluation_data(self) -> EvaluationData:
        """The evaluation subset with the classifier interface its data implies, for the gate."""
        data = self.data
        return EvaluationData(data.name, self.eval_subset_batches(), data.input_shape, data.num_classes)

    def split_summary(self) -> dict[str, Any]:
        """Which split each group of summary keys was measured on, and the split sizes.

        A summary key's split is ``splits.<prefix>``, where the prefix is the key's text before its
        first dot (``onnx.pgd_acc`` -> ``splits.onnx``). Keys whose prefix has no entry (sizes,
        latency, ``data.*``) are not accuracy figures of a split.
        """
        final = self.eval_split
        info: dict[str, Any] = {"splits.torch": final, "splits.onnx": final, "splits.gate": final}
        info["data.train_examples"] = len(self.train_set)
        info["data.test_examples"] = len(self.test_set)
        if self.val_set is not None:
            info.update({"splits.val": "val", "data.val_examples": len(self.val_set), "data.val_seed": VALIDATION_SEED})
            for stage in ("pretrain", "finetune"):
                if getattr(self.recipe, stage).select != "last":
                    info[f"splits.{stage}"] = "val"
        return info

    @cached_property
    def example_inputs(self) -> torch.Tensor:
        """One input for tracing, export and the MLflow signature, from the final figures' split
        (a sweep with ``data.eval_split: val`` reads no test image at all)."""
        if self.eval_split == "val" and self.val_set is not None:
            x, _ = self.val_set[0]
            return x.unsqueeze(0)
        x, _ = next(iter(self.test_loader()))
        return x[:1]

    def new_model(self) -> NormalizedClassifier:
        return recipe_model(self.recipe, self.data)

    def preflight(self) -> None:
        """Check every input a run will read (data root and images, model name, checkpoint, the
        model on the data's inputs, the evaluation subset's labels, the export opset) before
        anything is written, so bad input never leaves a half-made output folder."""
        from robprune_deploy.checkpoints import load_model_weights
        from robprune_deploy.pipeline.run_preflight import check_export_opset, check_model_fits_data

        model = self.new_model()
        problems = self.recipe.split_problems()
        if problems:
            raise RecipeError(problems[0])
        _ = self.split_indices  # a val_size that leaves no training image fails here, before any file
        if self.recipe.model.checkpoint is not None:
            load_model_weights(model, self.recipe.model.checkpoint)
        check_model_fits_data(self, model)
        check_export_opset(self, model)
        quantize = self.recipe.quantize
        if quantize.enabled and quantize.calibration_size > len(self.train_set):
            raise QuantizationError(
                f"quantize.calibration_size: {quantize.calibration_size} calibration images asked for, the "
                f"training split holds {len(self.train_set)}"
            )
        self.summary["paths.out_dir"] = str(self.out_dir.resolve())
        if self.recipe.data.root is not None:
            self.summary["paths.data_root"] = str(Path(self.recipe.data.root).expanduser().resolve())
        if self.recipe.model.checkpoint is not None:
            self.summary["paths.checkpoint"] = str(Path(self.recipe.model.checkpoint).expanduser().resolve())

    # --- stage bookkeeping for --resume -------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.out_dir / "state.json"

    def completed(self) -> dict[str, Any]:
        """``{stage: figures}`` of the stages ``state.json`` records as complete."""
        state = read_state(self.out_dir)
        return dict(state["stages"]) if state is not None else {}

    def is_done(self, stage: str) -> bool:
        return self.resume and stage in self.completed()

    def mark_done(self, stage: str, info: dict[str, Any] | None = None) -> None:
        """Record ``stage`` as complete; the stages after it, computed from its former output, are not."""
        if self.is_main:
            state = read_state(self.out_dir) or {"owner": owner_record(self.recipe, self.recipe_source), "stages": {}}
            stages = state["stages"]
            if stage in STAGE_ORDER:
                for later in STAGE_ORDER[STAGE_ORDER.index(stage) + 1 :]:
                    stages.pop(later, None)
            stages[stage] = info or {}
            write_state(self.out_dir, state)

    def batches_on_device(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterable[Any]:
        for x, y in batches:
            yield x.to(self.device), y.to(self.device)
