"""Where a study lives: an Optuna storage whose running trials send heartbeats.

A worker that dies (SIGKILL, a lost machine) leaves its trial RUNNING. Every storage here records a
heartbeat for a running trial every ``heartbeat_s`` seconds; a trial without one for ``grace_s`` is
failed by whichever worker looks next (:func:`optuna.storages.fail_stale_trials`, which the
optimize loop calls before each trial), and Optuna's ``RetryHeartbeatStaleTrialCallback`` queues
it again with the same parameters, up to ``retries`` times.

- default: sqlite in the sweep's output folder (one machine);
- a database URL (``postgresql://...``, ``mysql://...``): Optuna's RDB storage and its own heartbeat;
- ``journal:PATH``: Optuna's journal file, for workers on several machines sharing a file system
  (NFS). Optuna's journal storage has no heartbeat of its own; :class:`HeartbeatJournalStorage`
  adds one as a trial system attribute, so the same recovery works there.

Clocks: a journal heartbeat is the writer's wall-clock time, compared with the reader's, so the
machines' clocks must agree to well within ``grace_s`` (NTP does).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the documented base of a storage with heartbeats
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from robprune_deploy.errors import SweepError
from robprune_deploy.sweep.locks import creating, sqlite_file
from robprune_deploy.sweep.spec import JOURNAL_PREFIX, SweepSpec

HEARTBEAT_ATTR = "robprune.heartbeat"
DEFAULT_DATABASE = "optuna.db"
SQLITE_BUSY_TIMEOUT_S = 60
"""Workers and their heartbeat threads write to one sqlite file: wait for its lock, do not fail."""

StaleCallback = Callable[["optuna.Study", FrozenTrial], None]


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with heartbeats, so stale trials are failed and retried as on RDB."""

    def __init__(
        self, backend: JournalFileBackend, heartbeat_interval: int, grace_period: int, callback: StaleCallback
    ) -> None:
        super().__init__(backend)
        self.heartbeat_interval, self.grace_period, self.callback = heartbeat_interval, grace_period, callback

    def record_heartbeat(self, trial_id: int) -> None:
        # The trial id is stored too: a retry copies its predecessor's system attributes. A trial
        # another worker declared dead takes no more beats; its own worker finds out when it reports.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, {"trial_id": trial_id, "time": time.time()})

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if not isinstance(beat, dict) or beat.get("trial_id") != trial._trial_id:
                continue  # no heartbeat of its own yet: not judged, as on RDB
            started = trial.datetime_start.timestamp() if trial.datetime_start is not None else 0.0
            if now - max(float(beat["time"]), started) > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.callback


def default_storage(out: Path) -> str:
    return f"sqlite:///{out.resolve() / DEFAULT_DATABASE}"


def shown(url: str) -> str:
    """The storage as printed and recorded: a database password is never shown."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def retry_stale(retries: int, on_stale: Callable[[FrozenTrial, bool], None] | None) -> StaleCallback:
    """Optuna's retry of a heartbeat-stale trial (same parameters, queued as WAITING), which also
    tells ``on_stale(trial, queued)``."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=retries)

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        retry(study, trial)
        if on_stale is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                earlier = RetryHeartbeatStaleTrialCallback.retry_history(trial)
            on_stale(trial, len(earlier) < retries)

    return callback


def open_storage(
    spec: SweepSpec, on_stale: Callable[[FrozenTrial, bool], None] | None = None
) -> tuple[BaseStorage, str]:
    """The study's storage and its printable name; ``on_stale`` hears of every trial found dead.

    :raises SweepError: naming the storage when it cannot be opened.
    """
    url = spec.storage or default_storage(spec.out)
    with warnings.catch_warnings():  # heartbeats and the retry callback are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = retry_stale(spec.retries, on_stale)
        try:
            if url.startswith(JOURNAL_PREFIX):
                path = Path(url[len(JOURNAL_PREFIX) :])
                path.parent.mkdir(parents=True, exist_ok=True)
                storage: BaseStorage = HeartbeatJournalStorage(
                    JournalFileBackend(str(path)), spec.heartbeat_s, spec.grace_s, callback
                )
            else:
                with creating(sqlite_file(url)):  # workers starting together on a new file
                    storage = RDBStorage(
                        url,
                        engine_kwargs=_engine_options(url),
                        heartbeat_interval=spec.heartbeat_s,
                        grace_period=spec.grace_s,
                        heartbeat_stale_trial_callback=callback,
                    )
        except Exception as exc:
            detail = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise SweepError(f"storage {shown(url)}: cannot be opened ({detail})") from None
    return storage, shown(url)


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {"pool_pre_ping": True}  # a server that dropped an idle connection during a long trial
