"""The gate's own copy of each model it measures, read once and identified by its SHA-256.

The gate must register exactly what it measured. A path (or a downloaded artifact) read again
later may hold other bytes by then: a file replaced while the attacks ran. So the gate reads each
model's bytes once, writes them into its temporary work folder, hashes them, and from then on
measures, logs and registers only that staging copy; the hash goes into ``gate.json`` and the
MLflow tags, and a registered version is checked against it before an alias moves.

A model whose tensors live in external data files (``mlflow.onnx`` logs models that way) is staged
as one self-contained file with those tensors inlined, so the bytes that are hashed are all the
bytes that are measured. Its hash is therefore the hash of that inlined file, computed the same way
for the registered artifact it is compared with (:func:`onnx_sha256`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from robprune_deploy.errors import OnnxModelError, RobPruneError, TrackingError
from robprune_deploy.tracking import models as registry

SHA256_TAG = "robprune.sha256"
"""Tag of the gate's run and of a gated version: the SHA-256 of the measured (and registered) model."""
BASELINE_SHA256_TAG = "robprune.baseline_sha256"
"""Tag of the gate's run and of a gated version: the SHA-256 of the baseline it was measured against."""


@dataclass(frozen=True)
class StagedModel:
    """A model as the gate read it: ``path`` is the staging copy, ``source`` where it was read from."""

    path: Path
    sha256: str
    source: Path


def self_contained_bytes(source: Path) -> bytes:
    """The bytes of ``source``, read once; a model with external data comes back with it inlined.

    Bytes that do not parse as an ONNX model are returned as read: the gate's input checks reject
    them with their usual message.
    """
    data = source.read_bytes()
    import onnx
    from onnx.external_data_helper import (  # _get_all_tensors: the tensors load_external_data_for_model visits
        _get_all_tensors,
        load_external_data_for_model,
        uses_external_data,
    )

    try:
        proto = onnx.load_model_from_string(data)
    except Exception:  # not parseable: left to the gate's validation, which names the file
        return data
    if not any(uses_external_data(t) for t in _get_all_tensors(proto)):
        return data
    try:  # onnx refuses locations that leave the model's folder
        load_external_data_for_model(proto, str(source.parent))
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise OnnxModelError(f"ONNX file {source}: unreadable external data ({first})") from None
    return bytes(proto.SerializeToString())


def onnx_sha256(source: Path) -> str:
    """The SHA-256 the gate records for ``source`` (see :func:`self_contained_bytes`)."""
    return hashlib.sha256(self_contained_bytes(source)).hexdigest()


def stage_model(source: Path, folder: Path) -> StagedModel:
    """Copy ``source`` into ``folder`` (keeping its file name), once, and hash the copy's bytes."""
    data = self_contained_bytes(source)
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / source.name
    staged.write_bytes(data)
    return StagedModel(staged, hashlib.sha256(data).hexdigest(), source)


def as_source(exc: RobPruneError, staged: list[StagedModel]) -> RobPruneError:
    """``exc`` with each staging path in its message replaced by the file it was read from, so an
    error names the user's file, not the gate's temporary copy."""
    message = str(exc)
    for model in staged:
        message = message.replace(str(model.path), str(model.source))
    if message == str(exc) or type(exc).__init__ is not RobPruneError.__init__:
        return exc
    return type(exc)(message)


def check_registered_bytes(name: str, version: str, model: StagedModel, tracking_uri: str | None) -> None:
    """:raises TrackingError: unless the version's ONNX file (downloaded again) is the measured model."""
    uri = f"models:/{name}/{version}"
    held = onnx_sha256(registry.resolve_onnx(uri, tracking_uri))
    if held != model.sha256:
        raise TrackingError(
            f"{uri} holds sha256 {held}, not the measured model's {model.sha256}: version not tagged, alias not moved"
        )
