"""What every stage of a pipeline run shares: recipe, device, data, output folder, tracker."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from robprune_deploy import distributed
from robprune_deploy.atomic import write_json
from robprune_deploy.data import DatasetBundle, build_dataset, make_loader, seeded_subset
from robprune_deploy.models import NormalizedClassifier, build_model
from robprune_deploy.recipe import Recipe
from robprune_deploy.tracking import NullTracker, Tracker


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class RunContext:
    """State shared by the stages of one pipeline run.

    :param recipe: the validated recipe (overrides applied).
    :param out_dir: where stage outputs, ``state.json`` and ``summary.json`` are written.
    :param resume: skip stages recorded as completed in ``state.json`` and resume training stages
        from their last per-epoch checkpoint.
    """

    recipe: Recipe
    out_dir: Path
    tracker: Tracker = field(default_factory=NullTracker)
    resume: bool = False
    show_progress: bool = True

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.env, self.device = distributed.initialize(resolve_device(self.recipe.device))
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
        self.summary: dict[str, Any] = {}
        self.history: dict[str, list[tuple[int, dict[str, float]]]] = {}

    def record_epoch(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        """Keep per-epoch metrics for the plots and log them to the tracker (step = epoch)."""
        self.history.setdefault(stage, []).append((epoch, dict(metrics)))
        self.tracker.log_metrics(metrics, step=epoch)

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
    def train_set(self) -> Any:
        return seeded_subset(self.data.train, self.recipe.data.train_subset, self.recipe.seed)

    @cached_property
    def test_set(self) -> Any:
        return seeded_subset(self.data.test, self.recipe.data.test_subset, self.recipe.evaluate.subset_seed)

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
        """The fixed, seeded evaluation subset (``evaluate.num_examples``) as batches."""
        subset = seeded_subset(self.test_set, self.recipe.evaluate.num_examples, self.recipe.evaluate.subset_seed)
        return list(make_loader(subset, self.recipe.data.eval_batch_size, shuffle=False))

    @cached_property
    def example_inputs(self) -> torch.Tensor:
        x, _ = next(iter(self.test_loader()))
        return x[:1]

    def new_model(self) -> NormalizedClassifier:
        data = self.data
        model = self.recipe.model
        return build_model(
            model.name,
            data.num_classes,
            data.input_shape[0],
            data.mean,
            data.std,
            image_size=data.input_shape[1],
            kwargs=model.kwargs,
        )

    def preflight(self) -> None:
        """Check every input a run will read (data root and images, model name, checkpoint) before
        anything is written, so bad input never leaves a half-made output folder."""
        from robprune_deploy.checkpoints import load_model_weights

        model = self.new_model()
        if self.recipe.model.checkpoint is not None:
            load_model_weights(model, self.recipe.model.checkpoint)
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
        if not self.state_file.is_file():
            return {}
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data

    def is_done(self, stage: str) -> bool:
        return self.resume and stage in self.completed()

    def mark_done(self, stage: str, info: dict[str, Any] | None = None) -> None:
        if self.is_main:
            state = self.completed()
            state[stage] = info or {}
            write_json(self.state_file, state)

    def batches_on_device(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterable[Any]:
        for x, y in batches:
            yield x.to(self.device), y.to(self.device)
