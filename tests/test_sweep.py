"""``robprune sweep``: trials on an Optuna study, shared by workers, each grid point run once,
resumed after a worker is killed; and a bad sweep file is one error line naming the field.

The workers are real ``robprune sweep`` processes and every trial a real ``robprune run`` of the
digits HYDRA recipe at a tiny budget (most of a trial's seconds are imports and the ONNX export).
A worker is killed on an event it causes itself (its trial's ``pretrained.pt`` appears), never
after a blind sleep.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from clitools import RECIPES, cli, one_error  # type: ignore[import-not-found]
from conftest import subprocess_env  # type: ignore[import-not-found]
from mlflow import MlflowClient
from optuna.trial import TrialState

from robprune_deploy.errors import SweepError
from robprune_deploy.sweep import claims
from robprune_deploy.sweep.spec import load_sweep
from robprune_deploy.sweep.storage import HEARTBEAT_ATTR, HeartbeatJournalStorage, retry_stale
from robprune_deploy.sweep.worker import check_recipes, objective_value

TINY = {
    "data.train_subset": 128,
    "data.val_size": 64,
    "data.batch_size": 64,
    "attack.train_steps": 1,
    "attack.eval_steps": 2,
    "attack.val_steps": 2,
    "pretrain.epochs": 1,
    "compression.config.epochs": 1,
    "compression.config.hessian_eigenvalue": False,
    "finetune.epochs": 1,
    "evaluate.attacks": "pgd",
    "evaluate.num_examples": 64,
    "evaluate.square_queries": 0,
    "evaluate.square_examples": 8,
    "evaluate.curve_steps": 0,
    "evaluate.indicator_examples": 0,
    "evaluate.latency.repeats": 1,
    "evaluate.latency.warmup": 0,
    "evaluate.providers": ["cpu"],
    "tracking.registered_model": None,
    "tracking.alias": None,
}
"""A digits run of a few CPU seconds of work (the rest of a trial is start-up and export)."""
METRIC = "val.pgd_acc"
START = re.compile(r"trial (\d+) start: .* -> (trials/\S+)( \(resumed\))?$", re.M)
TIMEOUT_S = 900


def write_sweep(folder: Path, name: str, **fields: Any) -> Path:
    document = {
        "recipe": str(RECIPES / "digits_hydra.yaml"),
        "out": "out",
        "study": name,
        "fixed": dict(TINY),
        "objective": {"metric": METRIC, "direction": "maximize"},
        "heartbeat_s": 1,
        "grace_s": 10,
        **fields,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class Worker:
    """``robprune sweep FILE`` in a child process, its stdout and stderr in files."""

    def __init__(self, sweep: Path, tag: str, *extra: str) -> None:
        self.stdout, self.stderr = sweep.parent / f"{tag}.out", sweep.parent / f"{tag}.err"
        command = [sys.executable, "-m", "robprune_deploy.cli.main", "sweep", str(sweep), *extra]
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(command, env=subprocess_env(processes=2), stdout=out, stderr=err)

    def err(self) -> str:
        return self.stderr.read_text()

    def starts(self) -> list[tuple[int, str, bool]]:
        """(trial, run folder, resumed) of every trial this worker started."""
        return [(int(n), folder, bool(resumed)) for n, folder, resumed in START.findall(self.err())]

    def finish(self) -> int:
        try:
            code = self.proc.wait(timeout=TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert code == 0, self.err()[-4000:]
        return code


def wait_for(event: Callable[[], Any], what: str, *workers: Worker) -> Any:
    """Poll ``event()`` until it holds; a worker that exits meanwhile fails the test with its output."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        found = event()
        if found:
            return found
        for worker in workers:
            assert worker.proc.poll() is None, f"exited before {what}:\n{worker.err()[-4000:]}"
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stages_done(folder: Path) -> list[str]:
    """The stages ``state.json`` (written atomically) records as complete in a run folder."""
    state = folder / "state.json"
    return list(json.loads(state.read_text())["stages"]) if state.is_file() else []


def kill_on_first_stage(worker: Worker, out: Path, index: int = 0) -> tuple[int, Path, int]:
    """SIGKILL ``worker`` once the ``index``-th trial it started has recorded its pretraining as
    done; then wait for that trial's run to stop (it gets SIGTERM when its worker dies). Returns
    the trial number, its run folder and the pid of its run."""
    number, folder_name = wait_for(lambda: [s[:2] for s in worker.starts()][index:][:1], "a trial start", worker)[0]
    folder = out / folder_name
    wait_for(lambda: "pretrain" in stages_done(folder), "the first stage", worker)
    run_pid = json.loads((folder / ".robprune.lock").read_text())["pid"]
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(timeout=60)
    wait_for(lambda: not alive(run_pid), "the orphaned run to stop")
    return number, folder, run_pid


def summary_value(out: Path, folder: str) -> float:
    return float(json.loads((out / folder / "summary.json").read_text())[METRIC])


def check_sweep_json(out: Path, points: list[dict[str, Any]]) -> dict[str, Any]:
    """``sweep.json``: complete, one COMPLETE trial per point, best first, values from summary.json."""
    sweep = json.loads((out / "sweep.json").read_text())
    done = [t for t in sweep["trials"] if t["state"] == "COMPLETE"]
    assert sweep["complete"] is True and sweep["failed"] == []
    assert sorted(json.dumps(t["params"], sort_keys=True) for t in done) == sorted(
        json.dumps(p, sort_keys=True) for p in points
    )
    values = [t["value"] for t in done]
    assert values == sorted(values, reverse=True) and sweep["best"]["value"] == values[0]
    assert sweep["trials"][: len(done)] == done
    for trial in done:
        assert trial["value"] == summary_value(out, trial["run_folder"])
    return sweep


def ran_trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The trials that ran a setting (skipped ones stepped aside without running anything)."""
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    return [t for t in trials if not claims.is_skipped(t)]


def mlflow_runs(uri: str, query: str) -> list[Any]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(experiments, query))


# --- workers sharing a study -------------------------------------------------------------------------
def test_two_workers_on_sqlite_run_each_grid_point_once_as_mlflow_children(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid: dict[str, list[Any]] = {"compression.ratio": [0.5, 0.8], "seed": [0]}  # a point each, raced for
    sweep = write_sweep(tmp_path, "grid", grid=grid)
    workers = [Worker(sweep, tag, "--tracking-uri", uri) for tag in ("a", "b")]
    for worker in workers:
        worker.finish()
    out = tmp_path / "out"
    points = [{"compression.ratio": r, "seed": s} for r in grid["compression.ratio"] for s in grid["seed"]]

    started = [start for worker in workers for start in worker.starts()]
    assert len(started) == 2 and len({folder for _, folder, _ in started}) == 2  # each point once
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(folder[7:] for _, folder, _ in started)
    assert all(log.read_text().count("\n=== ") == 1 for log in (out / "logs").iterdir())  # one attempt each
    ran = ran_trials(f"sqlite:///{out / 'optuna.db'}", "grid")
    assert len(ran) == 2 and all(t.state == TrialState.COMPLETE for t in ran)
    sweep_json = check_sweep_json(out, points)
    assert all("study grid" in w.stdout.read_text() for w in workers)  # both end with the table

    parents = mlflow_runs(uri, "tags.`robprune.sweep.study` = 'grid'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # a loser's parent is deleted
    parent = parents[0].info.run_id
    assert sweep_json["mlflow"]["parent_run_id"] == parent
    children = mlflow_runs(uri, f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.run_id for r in children) == sorted(t["mlflow_run_id"] for t in sweep_json["trials"])
    assert all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.tags["robprune.out_dir"] for r in children) == sorted(
        str((out / t["run_folder"]).resolve()) for t in sweep_json["trials"]
    )
    for child in children:  # the pipeline's stages nest under the trial's run, in its experiment
        stages = mlflow_runs(uri, f"tags.mlflow.parentRunId = '{child.info.run_id}'")
        assert {"pretrain", "prune", "finetune", "export", "evaluate", "gate"} <= {r.data.tags["stage"] for r in stages}
        assert {r.info.experiment_id for r in stages} == {child.info.experiment_id} == {parents[0].info.experiment_id}
    experiment = MlflowClient(uri).get_experiment(parents[0].info.experiment_id)
    assert experiment.artifact_location.startswith((tmp_path / "mlruns").as_uri())  # beside the store


def test_two_workers_on_a_journal_finish_the_grid_when_one_is_killed(tmp_path: Path) -> None:
    fixed = {**TINY, "tracking.enabled": False}
    sweep = write_sweep(tmp_path, "journal", storage="journal:study.journal", fixed=fixed, grid={"seed": [0, 1]})
    out = tmp_path / "out"
    killed, survivor = Worker(sweep, "a"), Worker(sweep, "b")
    number, folder, _ = kill_on_first_stage(killed, out)
    pretrained = (folder / "pretrained.pt").stat()
    assert not (folder / ".robprune.lock").exists()  # the run stopped cleanly and released its folder

    survivor.finish()  # it takes the dead worker's trial over once its heartbeat is older than grace_s
    assert re.search(rf"trial {number} lost its worker .*: queued again", survivor.err())
    retried = [s for s in survivor.starts() if s[1] == f"trials/{folder.name}"]
    assert len(retried) == 1 and retried[0][2]  # resumed in its folder, after the completed pretraining
    assert (folder / "pretrained.pt").stat().st_mtime_ns == pretrained.st_mtime_ns
    assert "--resume" in (out / "logs" / f"{folder.name}.log").read_text().split("\n=== ")[-1].splitlines()[0]
    sweep_json = check_sweep_json(out, [{"seed": 0}, {"seed": 1}])
    assert [t["state"] for t in sweep_json["trials"]].count("FAIL") == 1  # the killed attempt, kept as such

    again = Worker(sweep, "c")  # the same command once more: nothing left to run
    again.finish()
    assert again.starts() == [] and json.loads((out / "sweep.json").read_text())["trials"] == sweep_json["trials"]


def test_a_journal_carried_to_another_machine_runs_nothing_again_and_gets_a_parent_run_there(
    tmp_path: Path,
) -> None:
    # machine a runs the sweep; machine b has a copy of its journal (committed, say), not its run
    # folders or its MLflow store
    for machine in ("a", "b"):
        (tmp_path / machine).mkdir()
        write_sweep(tmp_path / machine, "carried", storage="journal:study.journal", grid={"seed": [0]})
    first = Worker(tmp_path / "a" / "carried.yaml", "a", "--tracking-uri", f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")
    first.finish()
    shutil.copy(tmp_path / "a" / "study.journal", tmp_path / "b" / "study.journal")
    uri = f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    second = Worker(tmp_path / "b" / "carried.yaml", "b", "--tracking-uri", uri)
    second.finish()
    assert second.starts() == []  # done on a: not run again
    sweep_json = json.loads((tmp_path / "b" / "out" / "sweep.json").read_text())
    assert [t["state"] for t in sweep_json["trials"]] == ["COMPLETE"]
    parents = mlflow_runs(uri, "tags.`robprune.sweep.study` = 'carried'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # a's parent is not in b's store
    assert sweep_json["mlflow"]["parent_run_id"] == parents[0].info.run_id


def test_a_rerun_resumes_a_killed_worker_without_rerunning_finished_trials(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = write_sweep(tmp_path, "rerun", grid={"compression.ratio": [0.5, 0.8]})
    out = tmp_path / "out"
    first = Worker(sweep, "first", "--tracking-uri", uri)
    number, folder, _ = kill_on_first_stage(first, out, index=1)  # while its second trial runs
    (finished_number, finished_folder, _), _ = first.starts()
    finished = summary_value(out, finished_folder)
    pretrained = (folder / "pretrained.pt").stat().st_mtime_ns

    rerun = Worker(sweep, "rerun", "--tracking-uri", uri)
    rerun.finish()
    assert [(f, resumed) for _, f, resumed in rerun.starts()] == [(f"trials/{folder.name}", True)]
    assert f"trial {number} lost its worker" in rerun.err()
    assert summary_value(out, finished_folder) == finished  # the finished trial was not run again
    assert (folder / "pretrained.pt").stat().st_mtime_ns == pretrained
    check_sweep_json(out, [{"compression.ratio": 0.5}, {"compression.ratio": 0.8}])

    parent = mlflow_runs(uri, "tags.`robprune.sweep.study` = 'rerun'")[0].info.run_id
    by_trial = {
        r.data.tags["robprune.sweep.trial"]: r.info.status
        for r in mlflow_runs(uri, f"tags.mlflow.parentRunId = '{parent}'")
    }
    assert by_trial[str(finished_number)] == "FINISHED"
    assert by_trial[str(number)] == "KILLED"  # the killed worker's run was ended, not left RUNNING
    assert sorted(by_trial.values()) == ["FINISHED", "FINISHED", "KILLED"]


# --- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "needles"),
    [
        ({"grdi": {"seed": [0]}}, ("grdi: unknown field",)),
        ({}, ("either grid", "or params")),
        ({"grid": {"seed": [[0, 1]]}}, ("grid.seed.0: must be a number",)),
        ({"grid": {"seed": [0, 0]}}, ("grid.seed: values must be distinct",)),
        ({"grid": {"seed": [0]}, "n_trials": 3}, ("n_trials: a grid runs each",)),
        (
            {"params": {"compression.ratio": {"type": "float", "low": 0.9, "high": 0.5}}, "n_trials": 2},
            ("params.compression.ratio: ", "low (0.9) must not exceed"),
        ),
        ({"params": {"seed": {"type": "int", "low": 0, "high": 3}}}, ("n_trials: a params search needs",)),
        (
            {"grid": {"compression.ratio": [0.5, 1.5]}},
            ("grid point compression.ratio=1.5: recipe", "compression.ratio: Input should be less than 1"),
        ),
        ({"grid": {"seed": [0]}, "fixed": {"pretrain.epochz": 1}}, ("pretrain.epochz: unknown field",)),
        ({"grid": {"seed": [0]}, "fixed": {"seed": 1}}, ("fixed.seed: also searched",)),
        ({"grid": {"seed": [0]}, "recipe": "missing.yaml"}, ("recipe", "missing.yaml: no such file")),
        ({"grid": {"seed": [0]}, "study": "a b"}, ("study: 'a b' must be letters",)),
        (
            {"grid": {"seed": [0]}, "objective": {"metric": "val.pgd_acc", "direction": "up"}},
            ("objective.direction: ",),
        ),
        ({"grid": {"seed": [0]}, "grace_s": 1}, ("grace_s: ",)),
        ({"grid": {"seed": [0]}, "storage": "nodb://x/y"}, ("storage nodb://x/y: cannot be opened",)),
    ],
)
def test_a_bad_sweep_file_is_one_error_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fields: dict[str, Any], needles: tuple[str, ...]
) -> None:
    sweep = write_sweep(tmp_path, "bad", **{"fixed": {"tracking.enabled": False}, **fields})
    code, lines = cli(capsys, "sweep", sweep)
    assert code == 2
    where = () if "storage" in fields else (f"sweep {sweep}: ",)  # the storage error names the storage
    one_error(lines, *where, *needles)


def test_a_study_of_another_sweep_is_refused_and_nothing_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixed = {"tracking.enabled": False}
    first = write_sweep(tmp_path, "one", fixed=fixed, grid={"seed": [0, 1]})
    storage = f"sqlite:///{tmp_path / 'out' / 'optuna.db'}"
    (tmp_path / "out").mkdir()
    study = optuna.create_study(study_name="one", storage=storage)
    study.set_user_attr("robprune.definition", {"grid": {"seed": [5]}})
    code, lines = cli(capsys, "sweep", first)
    assert code == 2
    one_error(lines, "study 'one'", "holds another sweep (other fixed, grid, objective, recipe_fingerprint)")
    assert not (tmp_path / "out" / "trials").exists()


def test_a_missing_sweep_file_and_the_example_sweeps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = cli(capsys, "sweep", tmp_path / "none.yaml")
    assert code == 2
    one_error(lines, "none.yaml: no such file")
    examples = sorted((RECIPES / "sweeps").glob("*.yaml"))
    assert examples
    for path in examples:  # every shipped sweep validates, with every setting it can give its recipe
        spec = load_sweep(path)
        check_recipes(spec, str(path))
        assert spec.objective.metric.startswith("val.")  # sweeps choose on validation, never on test


def test_an_objective_missing_from_the_summary_stops_the_sweep_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(
        json.dumps({"val.pgd_acc": 0.25, "onnx.provider": "cpu", "gate.passed": True})
    )
    assert objective_value(tmp_path, "val.pgd_acc", "sweep s.yaml") == 0.25
    with pytest.raises(
        SweepError, match=r"sweep s.yaml: objective.metric: 'val.pgd' is not a number .*keys: val.pgd_acc\)"
    ):
        objective_value(tmp_path, "val.pgd", "sweep s.yaml")
    with pytest.raises(SweepError, match=r"objective\.metric: 'gate\.passed'"):  # a bool is not a figure
        objective_value(tmp_path, "gate.passed", "sweep s.yaml")


def test_workers_starting_together_on_a_new_sqlite_study_all_open_it(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "new", grid={"seed": [0]})
    code = (
        "import sys; from robprune_deploy.sweep.spec import load_sweep; "
        "from robprune_deploy.sweep.storage import open_storage; open_storage(load_sweep(sys.argv[1]))"
    )
    (tmp_path / "out").mkdir()
    starts = [
        subprocess.Popen([sys.executable, "-c", code, str(sweep)], env=subprocess_env(), stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=TIMEOUT_S)[1].decode() for p in starts]
    assert [p.returncode for p in starts] == [0, 0, 0], errors  # none finds the tables half made
    assert optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'out' / 'optuna.db'}") == []


def test_the_cli_names_the_sweep_command_without_importing_optuna_torch_or_mlflow() -> None:
    code = (
        "import sys; from robprune_deploy.cli.main import build_parser; build_parser().parse_args(['sweep', 's.yaml']);"
        "print(sorted(m for m in ('optuna', 'torch', 'mlflow', 'robprune_deploy.sweep.spec') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


# --- the rules, on real Optuna trials ------------------------------------------------------------------
def _trial(study: optuna.Study, state: TrialState, **system_attrs: Any) -> optuna.trial.FrozenTrial:
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        "seed": optuna.distributions.CategoricalDistribution([0, 1, 2])
    }
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=0.5 if state == TrialState.COMPLETE else None,
            params={"seed": 0},
            distributions=distributions,
            system_attrs=system_attrs,
        )
    )
    return study.get_trials()[-1]


def test_the_lowest_live_trial_of_a_setting_runs_it_and_finished_or_failed_settings_stay_put() -> None:
    study = optuna.create_study()
    done = _trial(study, TrialState.COMPLETE, grid_id=0)
    failed = _trial(study, TrialState.FAIL, grid_id=1)
    first = _trial(study, TrialState.RUNNING, grid_id=2)
    duplicate = _trial(study, TrialState.RUNNING, grid_id=2)  # GridSampler's pick under concurrency
    retry = _trial(study, TrialState.WAITING, grid_id=1, failed_trial=failed.number)
    again = _trial(study, TrialState.RUNNING, grid_id=0)
    trials = study.get_trials()
    assert claims.claim_problem(first, trials, grid=True, budget=None) is None
    assert claims.claim_problem(duplicate, trials, True, None) == f"taken by trial {first.number}"
    assert claims.claim_problem(again, trials, True, None) == f"done by trial {done.number}"
    assert claims.claim_problem(retry, trials, True, None) is None  # a retry of a failed setting runs
    fresh = _trial(study, TrialState.RUNNING, grid_id=1)  # a new trial does not rerun a failed setting by chance
    assert claims.claim_problem(fresh, study.get_trials(), True, None) == f"taken by trial {retry.number}"
    assert claims.all_failed(study.get_trials(), grid=True) == []  # the failed setting has a queued retry
    assert [t.number for t in claims.all_failed([done, failed], grid=True)] == [failed.number]
    assert claims.has_new_work(trials, grid_size=3, budget=None)  # the WAITING retry
    assert not claims.has_new_work([done, failed, first, duplicate], grid_size=3, budget=None)


def test_a_params_search_stops_at_n_trials_counting_retries_once() -> None:
    study = optuna.create_study()
    a = _trial(study, TrialState.FAIL)
    _trial(study, TrialState.COMPLETE)
    retry = _trial(study, TrialState.WAITING, failed_trial=a.number)
    third = _trial(study, TrialState.RUNNING)
    fourth = _trial(study, TrialState.RUNNING)
    trials = study.get_trials()
    assert claims.claim_problem(retry, trials, grid=False, budget=3) is None
    assert claims.claim_problem(third, trials, False, 3) is None
    assert claims.claim_problem(fourth, trials, False, 3) == "the study's 3 trials are taken"
    assert not claims.has_new_work([t for t in trials if t.number != retry.number], None, 3)


def test_a_journal_trial_without_heartbeats_is_failed_and_queued_again(tmp_path: Path) -> None:
    from optuna.storages.journal import JournalFileBackend

    heard: list[tuple[int, bool]] = []
    storage = HeartbeatJournalStorage(
        JournalFileBackend(str(tmp_path / "j.log")), 1, 2, retry_stale(1, lambda t, q: heard.append((t.number, q)))
    )
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    trial.suggest_int("x", 0, 9)
    storage.record_heartbeat(trial._trial_id)
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials()[0].state == TrialState.RUNNING  # beating: left alone
    wait_for(lambda: time.time() - study.get_trials()[0].system_attrs[HEARTBEAT_ATTR]["time"] > 2.2, "grace")
    optuna.storages.fail_stale_trials(study)
    dead, retry = study.get_trials()
    assert dead.state == TrialState.FAIL and retry.state == TrialState.WAITING and retry.params == dead.params
    assert heard == [(0, True)]
    popped = study.ask()  # the retry, carrying its predecessor's heartbeat: not judged by it
    assert popped.number == retry.number
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials()[1].state == TrialState.RUNNING
