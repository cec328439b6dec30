"""Joining a study: create it or load it, check that it is this sweep's, find its MLflow parent run.

Several workers may start the same command at once. Optuna creates a study name once per storage
(a second ``create_study`` raises ``DuplicatedStudyError``), so exactly one worker creates the
study; it records the sweep's definition and MLflow parent run in the study right away, and the
others read them from there. A later run of the command with another grid, objective or base
recipe under the same study name is refused: its trials would be mixed with the old ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import optuna
from optuna.storages import BaseStorage

from robprune_deploy.errors import SweepError

DEFINITION_ATTR = "robprune.definition"
PARENT_ATTR = "robprune.mlflow_parent_run_id"
_WAIT_FOR_CREATOR_S = 60.0


def join_study(
    name: str,
    storage: BaseStorage,
    shown_storage: str,
    direction: Literal["minimize", "maximize"],
    sampler: optuna.samplers.BaseSampler,
    definition: dict[str, Any],
    make_parent: Callable[[], str | None],
    forget_parent: Callable[[str], None],
    knows_parent: Callable[[str], bool],
) -> tuple[optuna.Study, str | None]:
    """The study and its MLflow parent run id (None without tracking).

    :param make_parent: creates this sweep's MLflow parent run (called before creating the study,
        so a worker that creates the study can record both at once).
    :param forget_parent: deletes a parent run made for a study another worker created first.
    :param knows_parent: whether this worker's MLflow store holds a recorded parent run (a study
        carried from another machine, in a journal file, names a run of that machine's store: this
        store then gets a parent of its own).
    :raises SweepError: when the study holds another sweep, or its creator never recorded it.
    """
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:  # no such study yet
        parent = make_parent()
        try:
            study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction=direction)
        except optuna.exceptions.DuplicatedStudyError:
            if parent is not None:
                forget_parent(parent)
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        else:
            # The parent first: a worker that finds the definition finds the parent too.
            study.set_user_attr(PARENT_ATTR, parent)
            study.set_user_attr(DEFINITION_ATTR, definition)
            return study, parent
    recorded = _recorded(study, name, shown_storage)
    if recorded != definition:
        raise SweepError(
            f"study {name!r} in {shown_storage} holds another sweep ({_difference(recorded, definition)}); "
            f"give this sweep another study name, or another storage"
        )
    parent = study.user_attrs.get(PARENT_ATTR)
    known = isinstance(parent, str) and knows_parent(parent)
    return study, parent if known else make_parent_late(study, make_parent)


def make_parent_late(study: optuna.Study, make_parent: Callable[[], str | None]) -> str | None:
    """A study made with tracking off (or carried from another machine's store), joined with tracking
    on: this worker adds the parent run."""
    parent = make_parent()
    if parent is not None:
        study.set_user_attr(PARENT_ATTR, parent)
    return parent


def _recorded(study: optuna.Study, name: str, shown_storage: str) -> Any:
    """The definition the study's creator recorded; it is written just after creation."""
    deadline = time.monotonic() + _WAIT_FOR_CREATOR_S
    while True:
        attrs = optuna.load_study(study_name=name, storage=study._storage).user_attrs
        if DEFINITION_ATTR in attrs:
            return attrs[DEFINITION_ATTR]
        if time.monotonic() > deadline:
            raise SweepError(
                f"study {name!r} in {shown_storage} records no sweep (made by something else, or its creator "
                f"was killed while making it); give this sweep another study name"
            )
        time.sleep(0.5)


def _difference(recorded: Any, definition: dict[str, Any]) -> str:
    if not isinstance(recorded, dict):
        return "not a robprune sweep"
    keys = sorted(k for k in set(recorded) | set(definition) if recorded.get(k) != definition.get(k))
    return "other " + ", ".join(keys) if keys else "another definition"
