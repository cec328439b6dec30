"""``robprune sweep SWEEP.yaml``: one worker of a study; start it as often, and where, as you like.

A worker joins the study (:mod:`robprune_deploy.sweep.study`), queues again the settings whose
trials all failed, then runs trials until none is left to start: Optuna's optimize loop hands it a
queued retry or a new trial (GridSampler, TPE or random), :mod:`robprune_deploy.sweep.claims`
decides whether that trial runs, and :mod:`robprune_deploy.sweep.runner` runs it as
``robprune run`` in its own folder. While other workers' trials still run, it waits, and takes
over a trial whose worker stopped sending heartbeats. It ends when the study is complete, with
``sweep.json`` and a table of the trials sorted by the objective.

Rerunning the command resumes: completed trials are kept, a trial whose worker died is retried in
its own folder (``robprune run --resume`` continues after its completed stages), and settings that
failed are tried once more.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import logging
import math
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from robprune_deploy.atomic import write_json
from robprune_deploy.errors import RobPruneError, SweepError
from robprune_deploy.pipeline.driver import SUMMARY
from robprune_deploy.pipeline.ownership import check_output_path, make_output_folder, recipe_fingerprint
from robprune_deploy.progress import lines_enabled
from robprune_deploy.recipe import Recipe, load_recipe
from robprune_deploy.sweep import claims, runner
from robprune_deploy.sweep.mlflow_runs import SweepTracking
from robprune_deploy.sweep.ranking import (
    ERROR_ATTR,
    FOLDER_ATTR,
    RUN_ID_ATTR,
    SECONDS_ATTR,
    SWEEP_JSON,
    document,
    print_table,
    relative,
)
from robprune_deploy.sweep.spec import SamplerSection, SweepSpec, override_text
from robprune_deploy.sweep.storage import open_storage
from robprune_deploy.sweep.study import join_study

TRIALS_DIR = "trials"
LOGS_DIR = "logs"
WORKER_ATTR = "robprune.worker"
CHILD_PID_ATTR = "robprune.child_pid"


class TrialFailed(Exception):
    """The trial's run ended with a non-zero exit code (recorded; the sweep goes on)."""


def say(text: str) -> None:
    """One progress line on stderr (stdout keeps the final table); none with ``--quiet``."""
    if lines_enabled():
        print(f"[{datetime.datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    keys = spec.searched
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*((spec.grid or {})[k] for k in keys))]


def check_recipes(spec: SweepSpec, where: str) -> Recipe:
    """The base recipe with the fixed overrides, and every setting the sweep can give it, validated
    before any trial runs: a bad value fails the command now (exit 2), not trial after trial."""

    def load(overrides: list[str], label: str) -> Recipe:
        try:
            return load_recipe(spec.recipe, [*spec.fixed_overrides(), *overrides])
        except RobPruneError as exc:
            raise SweepError(f"{where}: {label}{exc}") from None

    base = load([], "")
    settings: list[dict[str, Any]] = grid_points(spec) if spec.grid is not None else []
    for key, param in (spec.params or {}).items():
        values = param.choices if param.type == "categorical" else [param.low, param.high]
        settings += [{key: value} for value in values]
    for setting in settings:
        label = ", ".join(f"{k}={runner.value_text(v)}" for k, v in setting.items())
        load(
            [override_text(k, v) for k, v in sorted(setting.items())],
            f"{'grid point' if spec.grid else 'params'} {label}: ",
        )
    return base


def tracking_uri(recipe: Recipe, given: str | None) -> str | None:
    """The MLflow store every trial logs to, resolved once here (``--tracking-uri``, else the
    recipe's, else ``MLFLOW_TRACKING_URI``, else ``./mlflow.db``), so every trial uses the same."""
    if not recipe.tracking.enabled:
        return None
    from robprune_deploy.tracking.store_checks import default_tracking_uri

    return given or recipe.tracking.tracking_uri or default_tracking_uri()


def objective_value(folder: Path, metric: str, where: str) -> float:
    """The trial's objective: ``metric`` of the run's ``summary.json``.

    :raises SweepError: naming ``objective.metric`` and the numeric keys there are, when the summary
        has no finite number under that key (every trial would fail alike: the sweep stops).
    """
    summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    value = summary.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        numeric = sorted(k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise SweepError(
            f"{where}: objective.metric: {metric!r} is not a number in {folder / SUMMARY} "
            f"(got {value!r}; numeric keys: {', '.join(numeric[:12])}{', ...' if len(numeric) > 12 else ''})"
        )
    return float(value)


class Worker:
    def __init__(self, spec: SweepSpec, sweep_file: Path, given_uri: str | None) -> None:
        self.spec, self.where = spec, f"sweep {sweep_file}"
        self.grid = spec.grid is not None
        self.grid_size = spec.grid_size() if self.grid else None
        self.budget = spec.n_trials if not self.grid else None
        recipe = check_recipes(spec, self.where)
        self.uri = tracking_uri(recipe, given_uri)
        check_output_path(spec.out, "out")
        make_output_folder(spec.out, "out")
        storage, self.shown_storage = open_storage(spec, on_stale=self._lost_worker)
        self.tracking = (
            SweepTracking(
                self.uri,
                recipe.tracking.experiment,
                timeout_s=recipe.tracking.timeout_s,
                retries=recipe.tracking.retries,
            )
            if self.uri is not None
            else None
        )
        definition = {**spec.definition(), "recipe_fingerprint": recipe_fingerprint(recipe)}
        self.study, self.parent = join_study(
            spec.study,
            storage,
            self.shown_storage,
            spec.objective.direction,
            self._sampler(None),
            json.loads(json.dumps(definition)),  # as the storage gives it back (tuples become lists)
            self._make_parent(definition),
            self.tracking.delete if self.tracking is not None else lambda run_id: None,
            self.tracking.has_run if self.tracking is not None else lambda run_id: True,
        )
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}

    # --- set-up -----------------------------------------------------------------------------------
    def _sampler(self, trial_number: int | None) -> optuna.samplers.BaseSampler:
        """GridSampler with one order for every worker; a sampler seeded per trial number, so that
        workers started alike do not draw alike (and a study is reproduced trial by trial)."""
        if self.spec.grid is not None:
            return optuna.samplers.GridSampler(self.spec.grid, seed=0)
        config = self.spec.sampler or SamplerSection()
        seed = None if config.seed is None else (config.seed + (trial_number or 0)) % 2**32
        if config.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def _make_parent(self, definition: dict[str, Any]) -> Any:
        def make() -> str | None:
            if self.tracking is None:
                return None
            return self.tracking.create_parent(self.spec.study, self.shown_storage, definition)

        return make

    def _lost_worker(self, trial: FrozenTrial, queued: bool) -> None:
        worker = trial.user_attrs.get(WORKER_ATTR) or {}
        what = "queued again" if queued else f"not queued again: {self.spec.retries} retries used"
        say(
            f"trial {trial.number} lost its worker ({worker.get('host', '?')}:{worker.get('pid', '?')}; no heartbeat "
            f"for {self.spec.grace_s} s): {what}"
        )

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        try:
            return self._work()
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):  # the interrupted trial is recorded FAIL by now
                self._write(complete=False)
            raise

    def _work(self) -> dict[str, Any]:
        self._requeue_failed()
        waiting_for: set[int] = set()
        while True:
            self._fail_stale()
            trials = self.study.get_trials(deepcopy=False)
            if claims.has_new_work(trials, self.grid_size, self.budget):
                waiting_for.clear()
                self._optimize()
                continue
            busy = claims.running(trials)
            if not busy:
                break
            numbers = {t.number for t in busy}
            if numbers != waiting_for:
                say(f"waiting for trial {', '.join(map(str, sorted(numbers)))} running elsewhere")
                waiting_for = numbers
            time.sleep(max(1, min(self.spec.heartbeat_s, 10)))
        sweep = self._write(complete=True)
        if self.tracking is not None and self.parent is not None:
            self.tracking.finish(self.parent, self.spec.out / SWEEP_JSON, sweep["best"], self.spec.objective.metric)
        return sweep

    def _optimize(self) -> None:
        # UpdateFinishedTrialError: this worker's trial was declared dead meanwhile; its result was
        # kept (_keep_if_taken_over), and the loop goes on.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.study.optimize(
                self._objective, callbacks=[self._after_trial], catch=(TrialFailed,), gc_after_trial=False
            )

    def _after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not claims.is_skipped(trial):
            self._write(complete=False)
        if not claims.has_new_work(study.get_trials(deepcopy=False), self.grid_size, self.budget):
            study.stop()

    def _fail_stale(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def _requeue_failed(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
            for trial in claims.all_failed(self.study.get_trials(deepcopy=False), self.grid):
                retry(self.study, trial)
                error = trial.user_attrs.get(ERROR_ATTR) or "no error recorded"
                say(f"trial {trial.number} failed before ({error}): queued again")

    # --- one trial --------------------------------------------------------------------------------
    def _suggest(self, trial: Trial) -> dict[str, Any]:
        if self.spec.grid is not None:
            return {key: trial.suggest_categorical(key, self.spec.grid[key]) for key in self.spec.searched}
        self.study.sampler = self._sampler(trial.number)
        params: dict[str, Any] = {}
        for key, p in sorted((self.spec.params or {}).items()):
            if p.type == "float":
                params[key] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
            elif p.type == "int":
                params[key] = trial.suggest_int(key, p.low, p.high, log=p.log, step=p.step)
            else:
                params[key] = trial.suggest_categorical(key, p.choices)
        return params

    def _frozen(self, number: int) -> FrozenTrial:
        return next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)

    def _objective(self, trial: Trial) -> float:
        params = self._suggest(trial)
        trials = self.study.get_trials(deepcopy=False)
        me = next(t for t in trials if t.number == trial.number)
        problem = claims.claim_problem(me, trials, self.grid, self.budget)
        if problem is not None:
            trial.set_user_attr(claims.SKIPPED_ATTR, problem)
            say(f"trial {trial.number} skipped: {problem}")
            raise optuna.TrialPruned(problem)
        folder = self.spec.out / TRIALS_DIR / runner.folder_name(claims.identity(me, self.grid), params)
        if not claims.is_new(me) and runner.release_lock_of_dead_worker(folder, dict(me.user_attrs)):
            say(f"trial {trial.number}: removed the lock its dead predecessor's run left in {folder}")
        resume = runner.resumable(folder)
        run_id = None
        if self.tracking is not None and self.parent is not None:
            run_id = self.tracking.create_child(self.parent, folder.name, trial.number, params)
        attempt: dict[str, Any] = {
            WORKER_ATTR: self.me,
            FOLDER_ATTR: relative(folder, self.spec.out),
            RUN_ID_ATTR: run_id,
            ERROR_ATTR: None,  # a retry starts with its predecessor's attributes
            SECONDS_ATTR: None,
        }
        for key, recorded in attempt.items():
            trial.set_user_attr(key, recorded)
        shown = " ".join(f"{k.rsplit('.', 1)[-1]}={runner.value_text(v)}" for k, v in sorted(params.items()))
        say(f"trial {trial.number} start: {shown} -> {relative(folder, self.spec.out)}{' (resumed)' if resume else ''}")
        overrides = [*self.spec.fixed_overrides(), *(override_text(k, v) for k, v in sorted(params.items()))]
        argv = runner.command(self.spec.recipe, folder, overrides, self.uri, resume)
        log = self.spec.out / LOGS_DIR / f"{folder.name}.log"
        try:
            outcome = runner.execute(
                argv, log, runner.child_environment(run_id), lambda pid: trial.set_user_attr(CHILD_PID_ATTR, pid)
            )
        except KeyboardInterrupt as exc:  # the run was stopped first; the next run of the command retries it
            trial.set_user_attr(ERROR_ATTR, f"interrupted ({exc or 'Ctrl-C'})")
            raise
        trial.set_user_attr(SECONDS_ATTR, round(outcome.seconds, 1))
        if outcome.code != 0:
            trial.set_user_attr(ERROR_ATTR, f"exit {outcome.code}: {outcome.error}")
            if self.tracking is not None and run_id is not None:
                self.tracking.fail_child(run_id, outcome.error or "")
            took = f"{outcome.seconds:.0f} s (exit {outcome.code})"
            say(f"trial {trial.number} failed in {took}: {outcome.error}; log {log}")
            raise TrialFailed(outcome.error)
        value = objective_value(folder, self.spec.objective.metric, self.where)
        say(f"trial {trial.number} done in {outcome.seconds:.0f} s: {self.spec.objective.metric}={value:.4f}")
        self._keep_if_taken_over(trial.number, value)
        return value

    def _keep_if_taken_over(self, number: int, value: float) -> None:
        """A worker that stalled past the grace period finds its trial failed by another worker:
        its finished result is still kept, as a COMPLETE copy, so the retry steps aside."""
        frozen = self._frozen(number)
        if frozen.state == TrialState.RUNNING:
            return
        self.study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=value,
                params=frozen.params,
                distributions=frozen.distributions,
                user_attrs=frozen.user_attrs,
                system_attrs={k: v for k, v in frozen.system_attrs.items() if not k.startswith("robprune.")},
            )
        )
        say(f"trial {number} was declared dead by another worker; its result is kept as a new trial")

    # --- results ----------------------------------------------------------------------------------
    def _write(self, complete: bool) -> dict[str, Any]:
        header = {
            "study": self.spec.study,
            "storage": self.shown_storage,
            "recipe": str(self.spec.recipe),
            "out": str(self.spec.out),
            "objective": self.spec.objective.model_dump(),
            "search": "grid" if self.grid else (self.spec.sampler.name if self.spec.sampler else "tpe"),
            **self.spec.definition(),
            "mlflow": None
            if self.tracking is None
            else {"tracking_uri": self.uri, "experiment": self.tracking.experiment, "parent_run_id": self.parent},
        }
        trials = self.study.get_trials(deepcopy=False)
        header["failed"] = [t.number for t in claims.all_failed(trials, self.grid)]  # settings never done
        sweep = document(header, trials, self.spec.objective.direction, complete)
        write_json(self.spec.out / SWEEP_JSON, sweep)
        return sweep

    def print_table(self, sweep: dict[str, Any]) -> None:
        title = f"study {self.spec.study}: {sweep['counts']} ({self.spec.out / SWEEP_JSON})"
        print_table(sweep, self.spec.searched, self.spec.objective.metric, title)


def run_sweep(spec: SweepSpec, sweep_file: Path, given_uri: str | None) -> dict[str, Any]:
    """Join the study of ``spec`` and work until it is complete; returns ``sweep.json``'s content."""
    optuna.logging.set_verbosity(logging.ERROR)  # the worker prints its own lines, one per event
    worker = Worker(spec, sweep_file, given_uri)
    sweep = worker.run()
    worker.print_table(sweep)
    return sweep
