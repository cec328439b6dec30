"""The tracking interface of the pipeline.

The pipeline logs through a :class:`Tracker`: one parent run per pipeline and one nested run per
stage (``with tracker.stage("prune"): ...``). :class:`NullTracker` records nothing, for runs with
``tracking.enabled: false``; the MLflow implementation lives in :mod:`robprune_deploy.tracking.mlflow_tracker`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    run_id: str | None

    def stage(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A nested run for one stage; metrics, params and artifacts logged inside go to it."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...


class NullTracker:
    """A tracker that records nothing."""

    run_id: str | None = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass
