"""Which trial runs a setting: each grid point (or sampled trial) runs once, whatever the workers do.

Optuna gives every trial a unique number in creation order, in every storage, and pops a queued
(WAITING) trial for exactly one worker. Its GridSampler gives trial ``k < N`` grid point ``k``;
later trials get a point not yet finished, which under concurrency may be one another worker is
running. So each trial, before it runs, looks at the trials of its setting (its *identity*: the
grid point, or for a sampled trial the trial it retries) and steps aside (PRUNED, with the reason
in the user attribute :data:`SKIPPED_ATTR`) when

1. one of them is COMPLETE: finished results are never run again;
2. one with a lower number is RUNNING or WAITING: the lowest-numbered live trial of a setting
   runs it, which every worker decides alike (numbers are a total order, and a trial with a lower
   number was created, and is visible, before this one);
3. this trial is new (not a retry) and one of them FAILED: a failed setting is retried only by a
   queued retry (a dead worker's trial, or the next run of the command), never by chance.

A params search also stops at ``n_trials``: a new trial that finds ``n_trials`` new trials below
its number steps aside.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState

SKIPPED_ATTR = "robprune.skipped"
RETRY_OF = "failed_trial"
"""The system attribute Optuna's RetryHeartbeatStaleTrialCallback puts on a retry: the first trial."""
GRID_ID = "grid_id"
"""The system attribute GridSampler puts on a trial: its grid point (a retry copies it)."""


def is_skipped(trial: FrozenTrial) -> bool:
    return SKIPPED_ATTR in trial.user_attrs


def is_new(trial: FrozenTrial) -> bool:
    return RETRY_OF not in trial.system_attrs


def identity(trial: FrozenTrial, grid: bool) -> int:
    """The setting a trial stands for: its grid point, or the number of the trial it retries."""
    if grid:
        point = trial.system_attrs.get(GRID_ID)
        return int(point) if isinstance(point, int) else -1 - trial.number
    origin = trial.system_attrs.get(RETRY_OF)
    return int(origin) if isinstance(origin, int) else trial.number


def claim_problem(me: FrozenTrial, trials: Sequence[FrozenTrial], grid: bool, budget: int | None) -> str | None:
    """Why trial ``me`` must not run (see the module), or None when it runs."""
    mine = identity(me, grid)
    same = sorted(
        (t for t in trials if t.number != me.number and not is_skipped(t) and identity(t, grid) == mine),
        key=lambda t: t.number,
    )
    for other in same:
        if other.state == TrialState.COMPLETE:
            return f"done by trial {other.number}"
    for other in same:
        if other.state in (TrialState.RUNNING, TrialState.WAITING) and other.number < me.number:
            return f"taken by trial {other.number}"
    for other in same:
        if other.state == TrialState.FAIL and is_new(me):
            return f"failed as trial {other.number}; the next run of the command retries it"
    if budget is not None and is_new(me):
        earlier = sum(1 for t in trials if t.number < me.number and is_new(t) and not is_skipped(t))
        if earlier >= budget:
            return f"the study's {budget} trials are taken"
    return None


def has_new_work(trials: Sequence[FrozenTrial], grid_size: int | None, budget: int | None) -> bool:
    """A queued trial, a grid point no trial has taken, or room under ``n_trials``."""
    live = [t for t in trials if not is_skipped(t)]
    if any(t.state == TrialState.WAITING for t in live):
        return True
    if grid_size is not None:
        return len({identity(t, True) for t in live} & set(range(grid_size))) < grid_size
    return budget is not None and sum(1 for t in live if is_new(t)) < budget


def running(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.RUNNING and not is_skipped(t)]


def all_failed(trials: Sequence[FrozenTrial], grid: bool) -> list[FrozenTrial]:
    """The last attempt of every setting whose attempts all FAILED (none queued, running or done)."""
    attempts: dict[int, list[FrozenTrial]] = {}
    for trial in trials:
        if not is_skipped(trial):
            attempts.setdefault(identity(trial, grid), []).append(trial)
    return [
        max(group, key=lambda t: t.number)
        for _, group in sorted(attempts.items())
        if all(t.state == TrialState.FAIL for t in group)
    ]
