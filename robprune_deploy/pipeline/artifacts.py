"""Stage outputs on disk: a model file that rebuilds a (masked) model without pickling code.

``pruned.pt`` / ``finetuned.pt`` hold the folded dense weights, the masks, the channel keep-sets and
the algorithm's statistics as JSON text, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robprune_deploy.algorithms import Granularity, PruningResult
from robprune_deploy.checkpoints import load_checkpoint, save_checkpoint
from robprune_deploy.errors import CheckpointError
from robprune_deploy.masking import apply_masks, fold_masks, masks_of
from robprune_deploy.surgery import ModelCount, count_model


def save_pruned(result: PruningResult, path: Path) -> Path:
    """Write ``result`` (masked model + keep-sets + statistics) atomically."""
    import copy

    masks = masks_of(result.model)
    dense = fold_masks(copy.deepcopy(result.model)).state_dict()
    state: dict[str, Any] = {
        "model": {k: v.detach().cpu() for k, v in dense.items()},
        "masks": {k: v.cpu() for k, v in masks.items()},
        "channel_keep": {k: v.cpu() for k, v in (result.channel_keep or {}).items()},
        "algorithm": result.algorithm,
        "granularity": result.granularity.value,
        "ratio": float(result.ratio),
        "dense_count": json.dumps([result.dense_count.params, result.dense_count.macs]),
        "extra": json.dumps(result.extra, default=_jsonable),
    }
    return save_checkpoint(state, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)


def load_pruned(path: Path, model: nn.Module, example_inputs: torch.Tensor, ignored_scope: Any | None) -> PruningResult:
    """Rebuild a :class:`PruningResult` from :func:`save_pruned`'s file onto a fresh ``model``."""
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
        apply_masks(model, state["masks"])
        params, macs = json.loads(state["dense_count"])
        granularity = Granularity(state["granularity"])
        keep = state["channel_keep"] or None
        return PruningResult(
            model,
            algorithm=str(state["algorithm"]),
            granularity=granularity,
            ratio=float(state["ratio"]),
            example_inputs=example_inputs,
            dense_count=ModelCount(params, params, macs, macs),
            channel_keep=keep,
            ignored_scope=ignored_scope,
            extra=json.loads(state["extra"]),
        )
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: not a pruned-model file of this architecture ({exc})") from None


def dense_count(model: nn.Module, example_inputs: torch.Tensor) -> ModelCount:
    return count_model(model, example_inputs)
