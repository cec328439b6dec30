"""Saving and safely loading model checkpoints.

Loading never unpickles arbitrary objects: ``.pt``/``.pth`` files go through
``torch.load(weights_only=True)`` and ``.safetensors`` through safetensors. A file that is not a
tensor archive, or one whose tensors do not fit the model, is a :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robprune_deploy.atomic import atomic_path
from robprune_deploy.errors import CheckpointError


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file, then rename (never a truncated checkpoint).

    The archive is built in memory and written with an ordinary file write, so a full disk is an
    ``OSError`` with its errno (torch's own zip writer reports it as a bare ``RuntimeError``).
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (or safetensors).

    :raises CheckpointError: when the file is missing, not a tensor archive, or holds objects
        that would need arbitrary code to unpickle.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file}: no such file")
    if file.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return {"model": load_file(str(file))}
        except Exception as exc:
            raise CheckpointError(f"checkpoint {file}: not a readable safetensors file ({exc})") from None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unsupported object"
        raise CheckpointError(
            f"checkpoint {file}: refused, it holds objects that only an unsafe unpickle could load ({first})"
        ) from None
    except Exception as exc:  # torch.load raises many types on foreign or damaged files
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"checkpoint {file}: not a torch tensor file ({detail})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {file}: expected a dict of tensors, found {type(state).__name__}")
    return state


def load_model_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a model state dict (bare, or under a ``"model"`` key) into ``model``, strictly.

    :raises CheckpointError: naming the file and the first mismatching keys or shapes, or a tensor
        that holds NaN or inf.
    """
    state = load_checkpoint(path)
    weights = state.get("model", state)
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"checkpoint {path}: does not hold a model state dict")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:3]}")
        if shapes:
            k = shapes[0]
            details.append(f"shape of {k}: {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}")
        raise CheckpointError(f"checkpoint {path}: does not fit the model architecture ({'; '.join(details)})")
    broken = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"checkpoint {path}: {len(broken)} tensors hold NaN or inf, e.g. {broken[0]}")
    model.load_state_dict(weights)
    return model
