"""Model URIs and registry operations: resolve ``models:/`` and ``runs:/`` inputs, aliases, tags."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from robprune_deploy.errors import OnnxModelError, TrackingError

MLFLOW_SCHEMES = ("models:/", "runs:/")
BASELINE_TAG = "robprune.baseline_uri"
"""Tag of a logged run and registered version: the ``runs:/`` URI of the dense ONNX model logged beside it."""
FP32_TAG = "robprune.fp32_uri"
"""Tag of a registered INT8 version: the model URI of the FP32 model it was quantized from."""


def _download_folder() -> str:
    """A fresh temporary folder for a download, removed when the process exits.

    A downloaded model or checkpoint is read until the command ends (the gate measures it, the
    pipeline loads it in several stages), so it cannot go with the function that fetched it.
    """
    folder = tempfile.mkdtemp(prefix="robprune-download-")
    atexit.register(partial(shutil.rmtree, folder, ignore_errors=True))
    return folder


def is_mlflow_uri(text: str) -> bool:
    return text.startswith(MLFLOW_SCHEMES)


def download_artifact(uri: str, field: str, tracking_uri: str | None = None) -> Path:
    """Download ``uri`` (an artifact or a whole logged model) into a fresh temporary folder.

    :param field: what the URI was given as (``"model"``, ``"model.checkpoint"``), for the error.
    :param tracking_uri: the store to resolve it in (default: ``MLFLOW_TRACKING_URI`` or ``./mlflow.db``).
    :raises TrackingError: naming the field and the URI when MLflow cannot resolve or fetch it.
    """
    import mlflow

    from robprune_deploy.tracking.mlflow_tracker import default_tracking_uri
    from robprune_deploy.tracking.preflight import check_server

    store = tracking_uri or default_tracking_uri()
    check_server(store)
    mlflow.set_tracking_uri(store)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=_download_folder())
    except Exception as exc:  # MLflow raises its own, OSError and sqlalchemy errors alike
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TrackingError(f"{field} {uri}: cannot be downloaded from MLflow ({detail})") from None
    return Path(local)


def resolve_onnx(model: str, tracking_uri: str | None = None) -> Path:
    """A local ONNX file for ``model``: a path, or an MLflow model URI downloaded to a temp folder.

    :raises OnnxModelError: for a missing file; :raises TrackingError: for an unresolvable URI.
    """
    if not is_mlflow_uri(model):
        path = Path(model).expanduser()
        if not path.is_file():
            raise OnnxModelError(f"ONNX file {path}: no such file")
        return path.resolve()
    local = download_artifact(model, "model", tracking_uri)
    files = [local] if local.is_file() else sorted(local.rglob("*.onnx"))
    if not files:
        raise TrackingError(f"model {model}: holds no .onnx file")
    return files[0]


def registered_version(model: str) -> tuple[str, str] | None:
    """``(name, version)`` of a ``models:/name/version`` or ``models:/name@alias`` URI, else None."""
    if not model.startswith("models:/"):
        return None
    from mlflow import MlflowClient

    body = model[len("models:/") :].strip("/")
    client = MlflowClient()
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            return name, str(client.get_model_version_by_alias(name, alias).version)
        name, _, version = body.partition("/")
        if version == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            version = str(max(int(v.version) for v in versions))
        return name, version
    except Exception as exc:
        raise TrackingError(f"model {model}: not in the registry ({str(exc).splitlines()[0]})") from None


def recorded_baseline(model: str, tag: str = BASELINE_TAG) -> str | None:
    """The dense baseline recorded with an MLflow model URI (its version's or run's ``robprune.baseline_uri``;
    ``tag`` names another recorded model, e.g. an INT8 version's FP32 model)."""
    if not is_mlflow_uri(model):
        return None
    from mlflow import MlflowClient

    client = MlflowClient()
    known = registered_version(model)
    try:
        if known is not None:
            version = client.get_model_version(*known)
            tags = dict(version.tags or {})
            run_id = version.run_id
        else:
            tags, run_id = {}, model[len("runs:/") :].split("/", 1)[0]
        if tag not in tags and run_id:
            tags = dict(client.get_run(run_id).data.tags)
    except Exception:  # an unknown run or version has no recorded baseline; the drop checks say so
        return None
    return tags.get(tag)


def tag_version(name: str, version: str, tags: Mapping[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def set_alias(name: str, alias: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, version)


def alias_version(name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None when unset."""
    from mlflow import MlflowClient

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except Exception:
        return None
