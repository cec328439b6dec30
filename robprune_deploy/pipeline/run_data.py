"""The run's data: the splits, loaders and model factory a recipe implies, without a run folder.

:class:`RunData` is what the stages, the gate and the Python API read; it writes nothing and
joins no process group, so the gate builds one from a recipe alone (:func:`gate_run_data`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from robprune_deploy.data import (
    VALIDATION_SEED,
    DatasetBundle,
    build_dataset,
    make_loader,
    seeded_subset,
    validation_split,
)
from robprune_deploy.errors import DatasetError, RecipeError
from robprune_deploy.evaluation.memory_bound import bound_session_memory
from robprune_deploy.gate.validation import EvaluationData
from robprune_deploy.models import NormalizedClassifier
from robprune_deploy.pipeline.recipe_model import recipe_model
from robprune_deploy.pipeline.recipe_threads import apply_recipe_threads
from robprune_deploy.recipe import Recipe
from robprune_deploy.runtime import ThreadChoice


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


@dataclass
class RunData:
    """The data of one recipe: dataset, splits, loaders, evaluation subset and model factory.

    :param recipe: the validated recipe (overrides applied).
    :param device: where training loaders pin memory for; the data itself stays on the CPU.
    :param distributed: training loaders shard the training split across ``torchrun`` ranks.

    Everything is built on first use and kept: a gate that reads only the evaluation subset never
    loads the training split's loader.
    """

    recipe: Recipe
    device: torch.device = field(default=torch.device("cpu"), kw_only=True)
    distributed: bool = field(default=False, kw_only=True)

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

    def batches_on_device(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterable[Any]:
        for x, y in batches:
            yield x.to(self.device), y.to(self.device)


def apply_process_settings(recipe: Recipe, data: RunData, *, announce: bool) -> ThreadChoice:
    """What a recipe sets for the whole process, before anything is measured: the memory bound of
    inference sessions (``evaluate.max_session_memory_mb``) and ``runtime.threads`` (sized by the
    recipe's model on ``data``; :mod:`robprune_deploy.pipeline.recipe_threads`)."""
    bound_session_memory(recipe.evaluate.max_session_memory_mb)
    return apply_recipe_threads(recipe, lambda: data.data, announce=announce)


def gate_run_data(recipe: Recipe, *, show_progress: bool = True) -> RunData:
    """The data a gate of ``recipe`` measures on (:meth:`RunData.evaluation_data`), from the recipe
    alone (no run folder). The recipe's device is checked and its process settings applied first,
    as a run does.
    """
    resolve_device(recipe.device)
    data = RunData(recipe)
    apply_process_settings(recipe, data, announce=show_progress)
    return data
