"""The functional API, in the style of ``nncf.prune``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from robprune_deploy.algorithms import ALGORITHMS, PruningContext, PruningResult
from robprune_deploy.attacks import RobustLoss, ThreatModel
from robprune_deploy.errors import RecipeError

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

    Example::

        result = robprune_deploy.prune(model, "s2ap", nncf.Dataset(train_loader), ratio=0.9,
                                       epochs=10, gamma=0.1)
        deployable = result.strip()
    """
    if not 0 < ratio < 1:
        raise RecipeError(f"ratio: must lie in (0, 1), got {ratio}")
    cls = ALGORITHMS.get(algorithm)
    try:
        config = cls.Config.model_validate(algorithm_config)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise RecipeError(f"{algorithm} config: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    batches = _batches(dataset)
    x, _ = next(iter(batches))
    target = torch.device(device) if device is not None else next(model.parameters()).device
    context = PruningContext(
        train_data=batches,
        ratio=ratio,
        threat=attack or DEFAULT_THREAT,
        example_inputs=x[:1],
        loss=RobustLoss(loss),
        ignored_scope=ignored_scope,
        device=target,
        seed=seed,
    )
    return cls(config).apply(model.to(target), context)
