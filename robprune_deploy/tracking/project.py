"""The parent run of a pipeline started by ``mlflow run`` (an MLproject entry point).

``mlflow run`` creates the project's run before the entry point starts and passes its id in
``MLFLOW_RUN_ID``; the run lands in the experiment given with ``--experiment-name`` or, without it,
in MLflow's ``Default`` experiment. The rule here:

- the project run is in the recipe's ``tracking.experiment``, or in any experiment the user chose
  explicitly (not ``Default``): it becomes the pipeline's parent, and the stages nest inside it;
- it is in ``Default``: a run cannot move between experiments, so the pipeline's parent is a new run
  in the recipe's experiment, and the two runs point at each other with tags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PROJECT_RUN_TAG = "robprune.project_run_id"
"""On a pipeline parent created beside a project run in ``Default``: that project run's id."""
PIPELINE_RUN_TAG = "robprune.pipeline_run_id"
"""On such a project run: the id of the pipeline parent in the recipe's experiment."""

DEFAULT_EXPERIMENT_ID = "0"


@dataclass(frozen=True)
class ParentRun:
    """Where a pipeline's parent run goes.

    :param resume: the project run to resume as the parent, or None to start a new run.
    :param experiment: the experiment to start the new run in (None when resuming).
    :param linked: the project run in ``Default`` that the new parent is linked to.
    :param resume_experiment_id: the id of the experiment of the run to resume (its stages start there).
    """

    resume: str | None
    experiment: str | None
    linked: str | None = None
    resume_experiment_id: str | None = None


def choose_parent(experiment: str) -> ParentRun:
    """Apply the module's rule to ``MLFLOW_RUN_ID`` (consumed, as ``mlflow.start_run`` does itself).

    Call it after ``mlflow.set_tracking_uri``.
    """
    run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    if not run_id:
        return ParentRun(None, experiment)
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    default = client.get_experiment(experiment_id)
    if experiment_id != DEFAULT_EXPERIMENT_ID or default.name == experiment:
        return ParentRun(run_id, None, resume_experiment_id=experiment_id)
    if client.get_experiment_by_name(experiment) is None and _is_local(default.artifact_location):
        # A local store puts a new experiment's artifacts under ./mlruns of the creating process, and
        # an entry point runs inside the project's folder: keep them beside Default's instead, where
        # the user ran `mlflow run`.
        root = default.artifact_location.rstrip("/").rpartition("/")[0]
        client.create_experiment(experiment, artifact_location=f"{root}/{experiment}")
    return ParentRun(None, experiment, linked=run_id)


def _is_local(location: str) -> bool:
    return location.startswith(("/", "file:"))


def link_runs(parent_run_id: str, choice: ParentRun) -> None:
    """Tag a new parent and the ``Default`` project run with each other's id (no-op otherwise)."""
    if choice.linked is None:
        return
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_tag(parent_run_id, PROJECT_RUN_TAG, choice.linked)
    client.set_tag(choice.linked, PIPELINE_RUN_TAG, parent_run_id)
    note = (
        f"robprune logged this run's pipeline in experiment '{choice.experiment}' (run {parent_run_id}), the recipe's "
        "tracking.experiment. Pass `mlflow run --experiment-name` to keep project runs there as well."
    )
    client.set_tag(choice.linked, "mlflow.note.content", note)
