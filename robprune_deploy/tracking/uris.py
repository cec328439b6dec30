"""MLflow model and artifact URIs as stage inputs, so stages chain across runs.

``model.checkpoint`` (and the MLproject ``checkpoint`` parameter) accepts, besides a local file:

- ``runs:/<run_id>/<path>``: an artifact of an earlier run, e.g. the ``checkpoints/pretrained.pt``
  the pretrain stage logs, or the ``torch_model`` a pipeline logs;
- ``models:/<name>/<version>``, ``models:/<name>/latest``, ``models:/<name>@<alias>``: a registered
  model version;
- ``models:/<model_id>``: a logged model (what :meth:`MlflowTracker.log_torch_model` returns).

The URI is downloaded with MLflow into a temporary folder and turned into one local weights file.
Weights are never unpickled: a plain ``.pt``/``.safetensors`` artifact is used as is (it is loaded
later with ``weights_only=True``), an MLflow pytorch model contributes the state dict the tracker
stored beside it (``extra_files/weights.pt``) or, failing that, the state dict of its ``torch.export``
archive (``data/model.pt2``). A pickled ``nn.Module`` is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from robprune_deploy.errors import CheckpointError
from robprune_deploy.tracking.models import WEIGHTS_FILE, download_artifact, is_mlflow_uri

_WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")


def _weights_in_model_dir(uri: str, folder: Path) -> Path:
    """The weights file of a downloaded MLflow pytorch model folder (see the module docstring)."""
    stored = folder / "extra_files" / WEIGHTS_FILE
    if stored.is_file():
        return stored
    exported = folder / "data" / "model.pt2"
    if exported.is_file():
        import torch

        from robprune_deploy.checkpoints import save_checkpoint

        try:
            state = torch.export.load(str(exported)).state_dict
        except Exception as exc:
            detail = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"model.checkpoint {uri}: unreadable torch.export archive ({detail})") from None
        return save_checkpoint({"model": dict(state)}, folder / WEIGHTS_FILE)
    raise CheckpointError(
        f"model.checkpoint {uri}: an MLflow model without a state dict (a pickled module is never loaded); "
        f"log it with robprune, or log a .pt state dict as an artifact and pass runs:/<run_id>/<path>"
    )


def resolve_checkpoint(spec: str | os.PathLike[str], tracking_uri: str | None = None) -> Path:
    """A local weights file for ``spec``: a path as given, or an MLflow URI downloaded and unpacked.

    :raises TrackingError: for a URI MLflow cannot fetch.
    :raises CheckpointError: for a URI that holds no weights file (or more than one).
    """
    text = str(spec)
    if not is_mlflow_uri(text):
        return Path(text).expanduser()
    local = download_artifact(text, "model.checkpoint", tracking_uri)
    if local.is_file():
        return local
    if (local / "MLmodel").is_file():
        return _weights_in_model_dir(text, local)
    files = sorted(p for p in local.rglob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    if len(files) != 1:
        found = ", ".join(p.name for p in files[:5]) or "none"
        raise CheckpointError(f"model.checkpoint {text}: expected one weights file in it, found {found}")
    return files[0]


class _ModelSection(Protocol):
    checkpoint: Path | None


class _TrackingSection(Protocol):
    @property
    def tracking_uri(self) -> str | None: ...


class CheckpointSource(Protocol):
    """What :func:`localize_checkpoint` reads and writes of a recipe (the recipe sits a layer above
    tracking: its values come in, its type is not imported)."""

    @property
    def model(self) -> _ModelSection: ...

    @property
    def tracking(self) -> _TrackingSection: ...


def localize_checkpoint(recipe: CheckpointSource) -> str | None:
    """Replace an MLflow URI in ``recipe.model.checkpoint`` by the downloaded local weights file.

    Every later reader of the recipe (preflight, the pretrain stage) then sees a plain file.
    Idempotent: a recipe whose checkpoint is already local is left alone.

    :returns: the original URI, for the run's tags and params, or None when nothing was resolved.
    """
    checkpoint = recipe.model.checkpoint
    if checkpoint is None or not is_mlflow_uri(str(checkpoint)):
        return None
    uri = str(checkpoint)
    recipe.model.checkpoint = resolve_checkpoint(uri, recipe.tracking.tracking_uri)
    return uri
