"""The functional API, in the style of ``nncf.prune``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from robprune_deploy.algorithms import ALGORITHMS, PruningContext, PruningResult
from robprune_deploy.arguments import CheckedBatches, check_count, check_fraction, check_model, model_classes
from robprune_deploy.attacks import RobustLoss, ThreatModel
from robprune_deploy.errors import ArgumentError, RecipeError

DEFAULT_THREAT = ThreatModel(eps=8 / 255, step_size=2 / 255, steps=10)
"""The field's CIFAR convention: L-inf 8/255, PGD-10 with step 2/255."""


def _batches(dataset: Any) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    # nncf.Dataset wraps an iterable of items; its transform is applied by get_inference_data().
    if hasattr(dataset, "get_inference_data"):
        return _Reiterable(dataset.get_inference_data)
    return dataset


class _Reiterable:
    def __init__(self, factory: Any) -> None:
        self._factory = factory

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._factory())


def prune(
    model: nn.Module,
    algorithm: str,
    dataset: Any,
    *,
    ratio: float,
    attack: ThreatModel | None = None,
    ignored_scope: Any | None = None,
    loss: RobustLoss | str = RobustLoss.PGD_AT,
    device: torch.device | str | None = None,
    seed: int = 0,
    **algorithm_config: Any,
) -> PruningResult:
    """Prune ``model`` with a registered robust pruning algorithm.

    :param model: a classifier taking inputs in [0, 1] (normalization inside the model).
    :param algorithm: a name in :data:`ALGORITHMS` (``"s2ap"``, ``"hydra"``, ``"mrpf"``, ...).
    :param dataset: an :class:`nncf.Dataset` (or any re-iterable) of ``(x, y)`` batches.
    :param ratio: target sparsity (unstructured) or MACs reduction (channel), in (0, 1).
    :param attack: the threat model of the robust loss; default L-inf 8/255, PGD-10.
    :param ignored_scope: an :class:`nncf.IgnoredScope` of layers never pruned.
    :param algorithm_config: the algorithm's options, validated by its config model.
    :returns: a :class:`PruningResult`; call ``strip()`` for the deployable model.
    :raises ArgumentError: for an argument of the wrong type or value; :raises DatasetError: for
        empty data, inputs outside [0, 1] or NaN, labels outside the model's classes (every batch is
        checked as the algorithm reads it); :raises ShapeError: for batches that are not images
        the model takes.

    Example::

        result = robprune_deploy.prune(model, "s2ap", nncf.Dataset(train_loader), ratio=0.9,
                                       epochs=10, gamma=0.1)
        deployable = result.strip()
    """
    model = check_model(model, "prune")
    if not isinstance(algorithm, str):
        raise ArgumentError(f"prune: algorithm must be a registered name, got {type(algorithm).__name__}")
    ratio = check_fraction(ratio, "prune: ratio", open_interval=True)
    if attack is not None and not isinstance(attack, ThreatModel):
        raise ArgumentError(f"prune: attack must be a ThreatModel, got {type(attack).__name__}")
    check_count(seed, "prune: seed", 0, 2**32 - 1)
    try:
        robust_loss = RobustLoss(loss)
        target = torch.device(device) if device is not None else next(model.parameters()).device
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ArgumentError(f"prune: {str(exc).splitlines()[0]}") from None
    cls = ALGORITHMS.get(algorithm)
    try:
        config = cls.Config.model_validate(algorithm_config)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise RecipeError(f"{algorithm} config: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    batches = CheckedBatches(_batches(dataset), "prune: dataset")
    x, _ = batches.first()
    batches.num_classes = model_classes(model.to(target), x, "prune")
    context = PruningContext(
        train_data=batches,
        ratio=ratio,
        threat=attack or DEFAULT_THREAT,
        example_inputs=x[:1],
        loss=robust_loss,
        ignored_scope=ignored_scope,
        device=target,
        seed=seed,
    )
    return cls(config).apply(model.to(target), context)
