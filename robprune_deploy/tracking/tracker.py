"""The tracking interface of the pipeline.

The pipeline logs through a :class:`Tracker`: one parent run per pipeline
(``with tracker.pipeline(...)``) and one nested run per stage (``with tracker.stage("prune")``).
:class:`NullTracker` records nothing, for runs with ``tracking.enabled: false`` and for the
non-zero ranks of a distributed job; :class:`~robprune_deploy.tracking.mlflow_tracker.MlflowTracker`
records into MLflow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn


class Tracker(Protocol):
    run_id: str | None

    def open(self) -> object:
        """Make the store ready to record (its first write); :meth:`pipeline` opens it too."""

    def pipeline(
        self, name: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[None]:
        """The parent run of a whole pipeline."""

    def stage(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A nested run for one stage; metrics, params and artifacts logged inside go to it."""

    def close_interrupted(self, out_dir: str) -> list[str]:
        """Mark FAILED the runs an earlier, killed attempt in ``out_dir`` left RUNNING."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_torch_model(self, model: nn.Module, example: np.ndarray) -> str | None: ...

    def log_checkpoint(self, path: Path) -> str | None:
        """Log a weights file of the active run; returns a ``runs:/`` URI a later run can load."""

    def log_file(self, path: Path, artifact_path: str) -> str | None:
        """Log a file under ``artifact_path`` of the active run; returns its ``runs:/`` URI."""

    def log_onnx_model(
        self, path: Path, example: np.ndarray, name: str = "onnx_model", *, exact: bool = False
    ) -> str | None: ...

    def register_model(self, model_uri: str, name: str, tags: Mapping[str, str]) -> str | None: ...


class NullTracker:
    """A tracker that records nothing."""

    run_id: str | None = None

    def open(self) -> None:
        pass

    @contextlib.contextmanager
    def pipeline(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield

    def close_interrupted(self, out_dir: str) -> list[str]:
        return []

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_torch_model(self, model: nn.Module, example: np.ndarray) -> str | None:
        return None

    def log_checkpoint(self, path: Path) -> str | None:
        return None

    def log_file(self, path: Path, artifact_path: str) -> str | None:
        return None

    def log_onnx_model(
        self, path: Path, example: np.ndarray, name: str = "onnx_model", *, exact: bool = False
    ) -> str | None:
        return None

    def register_model(self, model_uri: str, name: str, tags: Mapping[str, str]) -> str | None:
        return None
