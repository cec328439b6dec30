"""The sweep in MLflow: one parent run per study, one child run per trial attempt.

The worker creates the trial's run itself, as a child of the sweep's parent (tag
``mlflow.parentRunId``), and hands its id to ``robprune run`` in ``MLFLOW_RUN_ID``, the way
``mlflow run`` hands a project run to its entry point: the pipeline takes that run as its own
(:mod:`robprune_deploy.tracking.project`), so its stages nest under it and the MLflow UI shows
sweep > trial > stage.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from robprune_deploy.errors import TrackingError
from robprune_deploy.sweep.locks import creating
from robprune_deploy.tracking.mlflow_tracker import experiment_beside_store, flatten, param_text
from robprune_deploy.tracking.store_checks import bound_http_waits, check_server, check_store, local_store_path

STUDY_TAG = "robprune.sweep.study"
TRIAL_TAG = "robprune.sweep.trial"
PARENT_TAG = "mlflow.parentRunId"


class SweepTracking:
    """MLflow runs of one sweep, through :class:`mlflow.MlflowClient` (no active-run state).

    :raises TrackingError: naming the URI when the store cannot be used.
    """

    def __init__(self, uri: str, experiment: str, *, timeout_s: float, retries: int) -> None:
        bound_http_waits(timeout_s, retries)
        check_server(uri, timeout_s, retries)
        check_store(uri)
        from mlflow import MlflowClient

        self.uri, self.experiment = uri, experiment
        try:
            local = local_store_path(uri)
            with creating(local[1] if local is not None and local[0] == "sqlite" else None):
                self.client = MlflowClient(uri)
                self.experiment_id = experiment_beside_store(self.client, uri, experiment)
        except Exception as exc:
            raise TrackingError(f"tracking.tracking_uri {uri}: cannot use it ({str(exc).splitlines()[0]})") from None

    def create_parent(self, study: str, storage: str, definition: dict[str, Any]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"sweep-{study}",
            tags={STUDY_TAG: study, "robprune.sweep.storage": storage},
        )
        run_id = str(run.info.run_id)
        params = {k: param_text(v)[:500] for k, v in flatten(definition).items()}
        for key, value in params.items():
            self.client.log_param(run_id, key, value)
        return run_id

    def has_run(self, run_id: str) -> bool:
        """Whether this store holds run ``run_id`` (a study carried from another machine names a parent
        run of that machine's store)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise TrackingError(f"tracking.tracking_uri {self.uri}: cannot read run {run_id} ({exc.message})") from None
        return True

    def delete(self, run_id: str) -> None:
        """A parent run created for a study another worker created first."""
        with contextlib.suppress(Exception):
            self.client.delete_run(run_id)

    def create_child(self, parent_id: str, name: str, trial: int, params: dict[str, Any]) -> str:
        tags = {PARENT_TAG: parent_id, TRIAL_TAG: str(trial)}
        tags.update({f"robprune.sweep.param.{k}": param_text(v)[:500] for k, v in params.items()})
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return str(run.info.run_id)

    def fail_child(self, run_id: str, message: str) -> None:
        """A trial run the pipeline never took over (it failed before tracking started)."""
        with contextlib.suppress(Exception):
            run = self.client.get_run(run_id)
            if run.info.status == "RUNNING":
                self.client.set_tag(run_id, "error", message[:5000])
                self.client.set_terminated(run_id, status="FAILED")

    def finish(self, parent_id: str, sweep_json: Path, best: dict[str, Any] | None, metric: str) -> None:
        """The study is complete: its table and best value on the parent, which ends FINISHED."""
        self.client.log_artifact(parent_id, str(sweep_json))
        if best is not None:
            self.client.log_metric(parent_id, f"best.{metric}", float(best["value"]))
            self.client.set_tag(parent_id, "robprune.sweep.best_trial", str(best["number"]))
        self.client.set_terminated(parent_id, status="FINISHED")
