"""Model URIs and registry operations: resolve ``models:/`` and ``runs:/`` inputs, aliases, tags."""

from __future__ import annotations

import atexit
import os
import posixpath
import shutil
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from urllib.parse import unquote

from robprune_deploy.errors import OnnxModelError, TrackingError

MLFLOW_SCHEMES = ("models:/", "runs:/")
BASELINE_TAG = "robprune.baseline_uri"
"""Tag of a logged run and registered version: the ``runs:/`` URI of the dense ONNX model logged beside it."""
FP32_TAG = "robprune.fp32_uri"
"""Tag of a registered INT8 version: the model URI of the FP32 model it was quantized from."""
WEIGHTS_FILE = "weights.pt"
"""Name of the state-dict file stored inside every torch model the tracker logs."""


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

    from robprune_deploy.tracking.store_checks import check_server, default_tracking_uri

    store = tracking_uri or default_tracking_uri()
    check_server(store)
    mlflow.set_tracking_uri(store)
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # robprune's stderr holds its own lines only
    saved = {name: os.environ.get(name) for name in quiet}
    os.environ.update(quiet)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=_download_folder())
    except Exception as exc:  # MLflow raises its own, OSError and sqlalchemy errors alike
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TrackingError(f"{field} {uri}: cannot be downloaded from MLflow ({detail})") from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return Path(local)


def store_uri_problem(uri: str) -> str | None:
    """Why ``uri`` would not stay inside the MLflow artifact store, or None.

    Only ``runs:/<run_id>/<path>`` and ``models:/...`` URIs qualify, with a relative path of plain
    components: ``..`` (also percent-encoded), ``.``, empty components, backslashes and absolute
    paths could make MLflow read beside the run's or model's artifacts, or anywhere on the disk.
    """
    if not is_mlflow_uri(uri):
        return "not a runs:/ or models:/ URI; only the artifact store is read"
    body = unquote(uri.split(":/", 1)[1])
    if body.startswith("/") or "\\" in body or posixpath.isabs(body):
        return "an absolute path leaves the artifact store"
    parts = body.split("/")
    if ".." in parts:
        return "a '..' path component leaves the artifact store"
    if "." in parts or "" in parts[:-1] or not parts[0]:
        return "a '.' or empty path component; give a plain path inside the artifact store"
    return None


def check_store_uri(uri: str, field: str, tag: str | None = None) -> None:
    """:raises TrackingError: naming ``field`` (and the ``tag`` the URI was read from) unless
    ``uri`` resolves inside the artifact store (see :func:`store_uri_problem`)."""
    problem = store_uri_problem(uri)
    if problem:
        where = f"{field}: tag {tag} = {uri!r}" if tag else f"{field} {uri}"
        raise TrackingError(f"{where}: {problem}")


def served_onnx(local: Path, uri: str, field: str = "model") -> Path:
    """The ONNX file a downloaded ``uri`` stands for.

    An MLflow model folder (with an ``MLmodel`` file) stands for its ONNX flavor's ``data`` file, the
    one ``mlflow.onnx.load_model`` serves, whatever other ``.onnx`` files the folder holds. A plain
    artifact is the file itself, or the single ``.onnx`` file of an artifact folder.

    :raises TrackingError: naming the URI for a model without an ONNX flavor, a flavor whose file is
        missing or outside the folder, or an artifact folder with no or several ``.onnx`` files.
    """
    if local.is_file():
        return local
    mlmodel = local / "MLmodel"
    if mlmodel.is_file():
        return _flavor_file(local, mlmodel, uri, field)
    files = sorted(p for p in local.rglob("*.onnx") if p.is_file())
    if not files:
        raise TrackingError(f"{field} {uri}: holds no .onnx file")
    if len(files) > 1:
        names = ", ".join(str(p.relative_to(local)) for p in files[:5])
        raise TrackingError(f"{field} {uri}: ambiguous, an artifact folder with {len(files)} .onnx files ({names})")
    return files[0]


def _flavor_file(local: Path, mlmodel: Path, uri: str, field: str) -> Path:
    import yaml

    try:
        flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}
    except (yaml.YAMLError, AttributeError, UnicodeDecodeError) as exc:
        raise TrackingError(f"{field} {uri}: unreadable MLmodel file ({type(exc).__name__})") from None
    onnx_flavor = flavors.get("onnx") if isinstance(flavors, dict) else None
    if not isinstance(onnx_flavor, dict):
        names = ", ".join(sorted(map(str, flavors))) if isinstance(flavors, dict) else "none"
        raise TrackingError(f"{field} {uri}: an MLflow model without an ONNX flavor (flavors: {names or 'none'})")
    data = onnx_flavor.get("data")
    if not isinstance(data, str) or not data or posixpath.isabs(data) or ".." in data.replace("\\", "/").split("/"):
        raise TrackingError(f"{field} {uri}: the ONNX flavor's data path {data!r} is not a file inside the model")
    file = local / data
    if not file.is_file() or not file.resolve().is_relative_to(local.resolve()):
        raise TrackingError(
            f"{field} {uri}: ambiguous, the ONNX flavor's data {data!r} is not one file inside the model"
        )
    return file


def resolve_onnx(model: str, tracking_uri: str | None = None, field: str = "model") -> Path:
    """A local ONNX file for ``model``: a path, or an MLflow URI downloaded to a temp folder and
    resolved to the file its ONNX flavor serves (see :func:`served_onnx`).

    :raises OnnxModelError: for a missing file; :raises TrackingError: for a URI that leaves the
        artifact store, cannot be fetched, or does not stand for one ONNX file.
    """
    if not is_mlflow_uri(model):
        path = Path(model).expanduser()
        if not path.is_file():
            raise OnnxModelError(f"ONNX file {path}: no such file")
        return path.resolve()
    check_store_uri(model, field)
    local = served_onnx(download_artifact(model, field, tracking_uri), model, field)
    _DOWNLOADED_FROM[local] = model
    return local


_DOWNLOADED_FROM: dict[Path, str] = {}
"""The URI each file :func:`resolve_onnx` downloaded came from: reports name the URI, never the temp file."""


def origin_of(path: Path) -> str:
    """The MLflow URI ``path`` was downloaded from, else the path itself."""
    return _DOWNLOADED_FROM.get(path, str(path))


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
        if not version:  # models:/<model_id>: a logged model, not a registered version
            return None
        if version == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            version = str(max(int(v.version) for v in versions))
        return name, version
    except Exception as exc:
        raise TrackingError(f"model {model}: not in the registry ({str(exc).splitlines()[0]})") from None


def recorded_baseline(model: str, tag: str = BASELINE_TAG) -> str | None:
    """The dense baseline recorded with an MLflow model URI (its version's or run's ``robprune.baseline_uri``;
    ``tag`` names another recorded model, e.g. an INT8 version's FP32 model).

    :raises TrackingError: naming the model and the tag when the recorded value is not a URI inside
        the artifact store (a path, another scheme, ``..``): a tag is never read as a local file.
    """
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
            tags, run_id = {}, model[len("runs:/") :].split("/", 1)[0] if model.startswith("runs:/") else ""
        if tag not in tags and run_id:
            tags = dict(client.get_run(run_id).data.tags)
    except Exception:  # an unknown run or version has no recorded baseline; the drop checks say so
        return None
    value = tags.get(tag)
    if value is not None:
        check_store_uri(value, f"model {model}", tag)
    return value


def tag_version(name: str, version: str, tags: Mapping[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def set_alias(name: str, alias: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, version)


def delete_alias(name: str, alias: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().delete_registered_model_alias(name, alias)


def version_aliases(name: str, version: str) -> list[str]:
    """The aliases that point at ``version`` of ``name``."""
    from mlflow import MlflowClient

    return sorted(MlflowClient().get_model_version(name, version).aliases or [])


def latest_version_tagged(name: str, tags: Mapping[str, str], exclude: str) -> str | None:
    """The highest version of ``name`` other than ``exclude`` that carries every tag in ``tags``."""
    from mlflow import MlflowClient

    found = [
        int(v.version)
        for v in MlflowClient().search_model_versions(f"name='{name}'")
        if str(v.version) != exclude and all((v.tags or {}).get(k) == value for k, value in tags.items())
    ]
    return str(max(found)) if found else None


def alias_version(name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None when unset."""
    from mlflow import MlflowClient

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except Exception:
        return None
