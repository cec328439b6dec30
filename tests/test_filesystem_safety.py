"""Filesystem safety and exit codes a CI job can trust (issue 24, items 4 and 6).

Nothing outside ``--out``/``--report`` is touched: a symbolic link where robprune-deploy writes is
refused, ``--report`` is owned and locked like ``--out``, neither may lie inside ``data.root``. The
error handler cannot fail (exit 2 or 3, one line, never 1), SIGTERM ends a command like Ctrl-C
(MLflow runs KILLED, exit 143), and no path or name can print a line of its own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from clitools import RECIPES, ROOT, cli, one_error, sets, small_gate  # type: ignore[import-not-found]
from conftest import FAST_RUN, LIGHT_EVAL, subprocess_env  # type: ignore[import-not-found]
from mlflow import MlflowClient

from robprune_deploy.algorithms import ALGORITHMS, CompressionAlgorithm, PruningContext, PruningResult
from robprune_deploy.checkpoints import save_checkpoint
from robprune_deploy.cli.main import main, one_line, write_error_log
from robprune_deploy.errors import OutputError
from robprune_deploy.models import build_model
from robprune_deploy.pipeline.ownership import ERROR_LOG, LOCK_FILE

HYDRA, MRPF = RECIPES / "digits_hydra.yaml", RECIPES / "digits_mrpf.yaml"
OFF = sets("tracking.enabled=false")
SMALL_GATE = small_gate(*LIGHT_EVAL)
LONG_NAME = "a" * 300
UNMEASURED = Path("never-measured.onnx")
"""The model of a gate refused before it measures anything: the refusal comes first."""
VERDICT_WORDS = ("gate passed", "gate failed", "passed", "failed")


def contents(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links not followed) by its SHA-256: byte-for-byte state."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture()
def nothing_else_changes() -> Iterator[None]:
    """No error log in the temp folder (bad input is not an internal error) and nothing new in the
    repository (no stray mlflow.db or output folder)."""
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("robprune-error-*")), set(ROOT.iterdir())
    yield
    assert set(temp.glob("robprune-error-*")) == before[0]
    assert set(ROOT.iterdir()) == before[1]


QUICK_EVAL = sets("evaluate.num_examples=40", "attack.eval_steps=2", *LIGHT_EVAL, "tracking.enabled=false")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained digits CNN weights: a ``model.checkpoint`` that skips pretraining."""
    path = tmp_path_factory.mktemp("weights") / "weights.pt"
    save_checkpoint({"model": build_model("digits_cnn", 10, 1, [0.5], [0.5]).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def pretrained_run(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real HYDRA run folder (state.json, pretrained.pt) made by ``robprune pretrain`` in seconds."""
    out = tmp_path_factory.mktemp("pretrained") / "run"
    assert main(["pretrain", str(HYDRA), "--out", str(out), *sets(f"model.checkpoint={weights}"), *QUICK_EVAL]) == 0
    return out


def test_a_run_on_a_sqlite_store_keeps_its_artifacts_beside_the_database(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not under ./mlruns of the folder the command ran in (MLflow's default), outside the named folders."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    args = ["pretrain", str(HYDRA), "--out", str(tmp_path / "out"), "--tracking-uri", uri, "--quiet"]
    trains = sets(f"model.checkpoint={weights}", "pretrain.from_checkpoint=true", "pretrain.epochs=1")
    assert main([*args, *trains, *QUICK_EVAL, *sets("tracking.enabled=true", "data.train_subset=64")]) == 0
    assert list((tmp_path / "cwd").iterdir()) == []
    experiment = MlflowClient(uri).get_experiment_by_name("robprune-digits")
    folder = tmp_path / "store" / "mlruns" / "robprune-digits"
    assert experiment is not None and experiment.artifact_location == folder.as_uri()
    assert list(folder.rglob("pretrained.pt"))  # the stage's logged checkpoint went there


@pytest.fixture()
def finished(pretrained_run: Path, tmp_path: Path) -> Path:
    """A copy of the run folder, with the stage subfolders a whole run makes."""
    copy = tmp_path / "hydra-run"
    shutil.copytree(pretrained_run, copy)
    for folder, name in (("checkpoints", "pretrain_last.pt"), ("plots", "layers.png")):
        (copy / folder).mkdir()
        (copy / folder / name).write_bytes(b"ours")
    return copy


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A folder outside every output folder, holding files named like robprune's own."""
    folder = tmp_path / "outside"
    folder.mkdir()
    for name in ("pretrain_last.pt", "layers.png", "gate.json", "notes.txt"):
        (folder / name).write_bytes(f"precious {name}\n".encode())
    return folder


def _link(folder: Path, name: str, outside: Path) -> Path:
    """Replace ``folder/name`` by a symbolic link into ``outside`` (a file link for a file name)."""
    link = folder / name
    if link.is_dir():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    target = outside if "." not in name else outside / "gate.json"
    link.symlink_to(target, target_is_directory=target.is_dir())
    return link


# --- 4. never touch what is not ours -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["checkpoints", "plots", "gate.json", ERROR_LOG, "state.json"])
def test_force_refuses_a_symlink_in_out_and_the_target_survives(
    finished, outside, capsys, nothing_else_changes, name
) -> None:
    link = _link(finished, name, outside)
    before, ours = contents(outside), contents(finished)
    mrpf = sets(*(s for s in FAST_RUN if not s.startswith("compression.config")))
    code, err = cli(capsys, "run", MRPF, "--out", finished, "--force", *mrpf, *OFF)
    assert code == 2
    one_error(err, f"--out {finished}: {name} is a symbolic link (to {os.readlink(link)})", "remove it")
    assert contents(outside) == before and contents(finished) == ours


@pytest.mark.parametrize("name", ["gate.json", "gate.png", LOCK_FILE])
def test_a_symlink_in_the_report_folder_is_refused_and_the_target_survives(
    tmp_path, outside, capsys, nothing_else_changes, name
) -> None:
    report = tmp_path / "report"
    report.mkdir()
    link = _link(report, name, outside)
    before = contents(outside)
    code, err = cli(capsys, "gate", UNMEASURED, "--recipe", HYDRA, "--report", report, *SMALL_GATE)
    assert code == 2
    one_error(err, f"--report {report}: {name} is a symbolic link (to {os.readlink(link)})")
    assert contents(outside) == before and sorted(p.name for p in report.iterdir()) == [name]


def test_force_never_deletes_through_a_link_made_after_the_check(finished, outside) -> None:
    """Should a link appear after the checks (another process), ``--force`` still deletes only
    regular files in real subfolders of ``--out``."""
    from robprune_deploy.pipeline.ownership import clear_stage_files

    _link(finished, "checkpoints", outside)
    _link(finished, "gate.json", outside)
    before = contents(outside)
    removed = clear_stage_files(finished)
    assert contents(outside) == before
    assert (finished / "checkpoints").is_symlink() and (finished / "gate.json").is_symlink()
    assert (finished / "pretrained.pt") in removed
    assert not [p for p in removed if p.is_relative_to(finished / "checkpoints")]


def test_the_error_log_is_written_atomically_and_never_through_a_link(tmp_path, outside) -> None:
    args = argparse.Namespace(out=tmp_path / "out")
    args.out.mkdir()
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        first = write_error_log(args)
        assert first == args.out / ERROR_LOG and "RuntimeError: a bug" in first.read_text()
        assert sorted(p.name for p in args.out.iterdir()) == [ERROR_LOG]  # no temporary file left
        first.unlink()
        _link(args.out, ERROR_LOG, outside)
        before = contents(outside)
        fallback = write_error_log(args)
    assert fallback is not None and fallback.parent == Path(tempfile.gettempdir())
    assert "RuntimeError: a bug" in fallback.read_text()
    fallback.unlink()
    assert contents(outside) == before and (args.out / ERROR_LOG).is_symlink()


def _hold(folder: Path, pid: int) -> Path:
    lock = folder / LOCK_FILE
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2025-01-01T00:00:00+00:00"}))
    return lock


def test_two_gates_on_one_report_folder_are_refused_naming_the_holder(tmp_path, capsys, nothing_else_changes) -> None:
    report = tmp_path / "report"
    report.mkdir()
    (report / "gate.json").write_text('{"passed": false}')
    holder = subprocess.Popen(["sleep", "60"])  # the other gate
    try:
        lock = _hold(report, holder.pid)
        before = contents(report)
        code, err = cli(capsys, "gate", UNMEASURED, "--recipe", HYDRA, "--report", report, *SMALL_GATE)
        assert code == 2
        one_error(err, f"{report}: in use by process {holder.pid} on {socket.gethostname()}", str(lock))
        assert contents(report) == before
    finally:
        holder.kill()
        holder.wait()
    # Its holder gone, the lock is stale: the next gate takes it and releases it, whatever its outcome.
    code, err = cli(capsys, "gate", UNMEASURED, "--recipe", HYDRA, "--report", report, *SMALL_GATE)
    assert code == 2
    one_error(err, f"ONNX file {UNMEASURED}: no such file")
    assert sorted(p.name for p in report.iterdir()) == ["gate.json"]


def test_a_report_into_another_recipes_run_folder_is_refused(finished, capsys, nothing_else_changes) -> None:
    before = contents(finished)
    code, err = cli(capsys, "gate", UNMEASURED, "--recipe", MRPF, "--report", finished, *SMALL_GATE)
    assert code == 2
    one_error(err, f"--report {finished}: holds state.json of a run of recipe", "digits_hydra.yaml", "another --report")
    assert contents(finished) == before


def _tiny_image_folder(root: Path) -> None:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(4):
                pixels = torch.randint(0, 255, (16, 16, 3), dtype=torch.uint8, generator=generator).numpy()
                Image.fromarray(pixels).save(root / split / label / f"x{i}.png")


@pytest.mark.parametrize("where", ["--out inside", "--out is data.root", "--report inside"])
def test_an_output_inside_the_data_root_is_refused(tmp_path, capsys, nothing_else_changes, where) -> None:
    root = tmp_path / "images"
    _tiny_image_folder(root)
    before = contents(root)
    data = sets("data.name=imagefolder", f"data.root={root}")
    target = root if where == "--out is data.root" else root / "train" / "results"
    if where.startswith("--out"):
        code, err = cli(capsys, "run", HYDRA, "--out", target, *data, *OFF)
    else:
        code, err = cli(capsys, "gate", UNMEASURED, "--recipe", HYDRA, "--report", target, *data, *SMALL_GATE)
    assert code == 2
    one_error(err, f"{where.split()[0]} {target}: lies inside the recipe's data.root {root}")
    assert contents(root) == before and not (root / "train" / "results").exists()


# --- 6. exit codes a CI job can trust ----------------------------------------------------------------
@pytest.mark.parametrize("where", ["--out", "--report", "recipe file"])
def test_a_300_character_name_is_one_line_exit_2(tmp_path, capsys, nothing_else_changes, where) -> None:
    long = tmp_path / LONG_NAME
    if where == "--out":
        code, err = cli(capsys, "run", HYDRA, "--out", long / "out", *OFF)
    elif where == "--report":
        code, err = cli(capsys, "gate", UNMEASURED, "--recipe", HYDRA, "--report", long, *OFF)
    else:
        code, err = cli(capsys, "run", f"{long}.yaml", "--out", tmp_path / "out", *OFF)
    assert code == 2
    line = one_error(err, "File name too long")
    assert "Traceback" not in line and len(line) < 400
    if where != "recipe file":
        one_error(err, f"{where}: the name 'aaaaaaaaaaaaaaaaaaaaaaaa...' (300 bytes) is longer than the file system")
    assert list(tmp_path.iterdir()) == []


class _Crashing(CompressionAlgorithm):
    """A third-party algorithm with a bug: an internal error."""

    def apply(self, model: torch.nn.Module, context: PruningContext) -> PruningResult:
        return {}["masks"]  # type: ignore[no-any-return]


def test_an_internal_error_whose_log_cannot_be_written_is_still_one_line_exit_3(
    weights, tmp_path, capsys, monkeypatch
) -> None:
    """The log's place in ``--out`` is taken by a folder and the temp folder is gone: no log, still
    one line and exit 3; a log folder whose name the file system refuses falls back to a temp file."""
    monkeypatch.setitem(ALGORITHMS._items, "crashing", _Crashing)
    out = tmp_path / "out"
    (out / ERROR_LOG).mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-temp-folder"))
    overrides = ("compression.algorithm=crashing", "compression.config={}", f"model.checkpoint={weights}")
    code, err = cli(capsys, "prune", HYDRA, "--out", out, *sets(*overrides), *QUICK_EVAL)
    assert code == 3
    one_error(err, "raised KeyError: 'masks' in apply; no log could be written")
    assert not (out / LOCK_FILE).exists() and not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        log = write_error_log(argparse.Namespace(out=tmp_path / LONG_NAME, report=None))
    assert log is not None and log.parent == Path(tempfile.gettempdir()) and "a bug" in log.read_text()
    log.unlink()


def _robprune(*args: object) -> list[str]:
    return [sys.executable, "-m", "robprune_deploy.cli.main", *map(str, args)]


def _terminated_on(args: list[object], ready: Any, log: Path, timeout_s: float = 300) -> tuple[int, str]:
    """Run robprune ARGS, send SIGTERM as soon as ``ready()`` holds (an event the command itself
    causes, never a blind sleep); its exit code and stderr."""
    with open(log, "w") as stderr:
        proc = subprocess.Popen(_robprune(*args), env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + timeout_s
            while not ready():
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the event never came"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, log.read_text()


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_sigterm_during_a_run_ends_its_mlflow_runs_and_exits_143(tmp_path) -> None:
    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Epochs of 128 images, so many that the kill surely lands inside pretraining.
    args = ["run", HYDRA, "--out", out, "--quiet", "--tracking-uri", uri]
    args += sets(*FAST_RUN, "data.train_subset=128", "pretrain.epochs=50")
    in_pretrain = (out / "checkpoints" / "pretrain_last.pt").is_file  # its first epoch is done
    code, stderr = _terminated_on(args, in_pretrain, tmp_path / "stderr.txt")
    assert code == 143, stderr[-3000:]
    resume = shlex.join(["robprune", *map(str, args), "--resume"])  # the exact command that continues
    kept = f"the completed stages are kept in {out}"
    assert _errors(stderr) == [f"error: terminated by SIGTERM; {kept}; to continue: {resume}"]
    assert "Traceback" not in stderr and not (out / LOCK_FILE).exists()
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {r.info.run_name: r.info.status for r in runs} == {
        "hydra-digits_cnn-digits": "KILLED",
        "pretrain": "KILLED",
    }
    assert all(r.data.tags["error"] == "interrupted: Terminated: SIGTERM" for r in runs)


@pytest.fixture(scope="module")
def exported(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pruned, fine-tuned and exported digits model (model.onnx beside dense.onnx), in seconds."""
    out = tmp_path_factory.mktemp("exported") / "run"
    quick = sets(
        f"model.checkpoint={weights}",
        "data.train_subset=64",
        "compression.config.epochs=1",
        "finetune.epochs=1",
        "attack.train_steps=1",
    )
    for command in ("prune", "finetune", "export"):
        assert main([command, str(HYDRA), "--out", str(out), "--quiet", *quick, *QUICK_EVAL]) == 0
    return out / "model.onnx"


def test_sigterm_during_gate_registration_leaves_a_gate_json_that_says_so(exported, tmp_path, silent_server) -> None:
    """The kill lands while ``--register`` waits for the tracking server, after gate.json was written."""
    report = tmp_path / "report"
    report.mkdir()
    (report / "gate.json").write_text('{"passed": true, "from": "an earlier gate"}')
    args = ["gate", exported, "--recipe", HYDRA, "--report", report, "--quiet"]
    args += ["--tracking-uri", silent_server, "--register", "digits-term", *SMALL_GATE]
    args += sets("tracking.timeout_s=60", "tracking.retries=0")
    reported = (report / "gate.md").is_file  # written after gate.json, before registering
    code, stderr = _terminated_on(args, reported, tmp_path / "stderr.txt")
    assert code == 143, stderr[-3000:]
    assert _errors(stderr) == ["error: terminated by SIGTERM; the registration as 'digits-term' may not have finished"]
    verdict = json.loads((report / "gate.json").read_text())
    assert "from" not in verdict and verdict["model"] == str(exported)  # this gate's, not the earlier one
    assert verdict["registration_error"] == "interrupted (SIGTERM) before the registration finished"
    assert "registered_version" not in verdict and not (report / LOCK_FILE).exists()


FORGED = "\nGATE PASSED (report/gate.md)"


@pytest.mark.parametrize(
    "case",
    ["--report", "--out with ESC", "--register", "--alias", "--set model name", "recipe data.root", "recipe path"],
)
def test_control_characters_are_refused_and_never_print_a_line(tmp_path, capsys, nothing_else_changes, case) -> None:
    gate = ["gate", UNMEASURED, "--recipe", HYDRA, "--report", tmp_path / "r", *SMALL_GATE]
    recipe = tmp_path / "forged.yaml"
    recipe.write_text(f"data:\n  root: {json.dumps(str(tmp_path) + FORGED)}\n")
    made = set(tmp_path.iterdir())
    args: list[object] = {
        "--report": ["gate", UNMEASURED, "--recipe", HYDRA, "--report", f"{tmp_path}/r{FORGED}", *SMALL_GATE],
        "--out with ESC": ["run", HYDRA, "--out", f"{tmp_path}/o\x1b[2K\rgate PASSED", *OFF],
        "--register": [*gate, "--register", f"digits{FORGED}"],
        "--alias": [*gate, "--register", "digits", "--alias", "prod\r\x85gate PASSED"],
        "--set model name": ["run", HYDRA, "--out", tmp_path / "o", *sets(f"tracking.registered_model=x{FORGED}")],
        "recipe data.root": ["run", recipe, "--out", tmp_path / "o", *OFF],
        "recipe path": ["run", f"{recipe}{FORGED}", "--out", tmp_path / "o", *OFF],
    }[case]
    capsys.readouterr()
    code = main([str(a) for a in args])
    printed = capsys.readouterr()
    assert code == 2
    lines = [line for line in (printed.out + printed.err).splitlines() if line.strip()]
    one_error(lines, "control character")
    assert not [line for line in lines if line.strip().lower().startswith(VERDICT_WORDS)]
    assert not any(c in lines[0] for c in "\r\x1b\x85")
    assert set(tmp_path.iterdir()) == made


def test_messages_print_control_characters_escaped() -> None:
    """Whatever reaches a message (a file name read from disk) prints as one line, escaped."""
    assert one_line(OutputError("image /data/a\x1b[2K\rgate PASSED.png: cannot be decoded")) == (
        "image /data/a\\x1b[2K\\rgate PASSED.png: cannot be decoded"
    )
    assert one_line(OutputError("x\x85gate PASSED\u2028y\x7f")) == "x\\x85gate PASSED\\u2028y\\x7f"
    assert one_line(OutputError("first line\nGATE PASSED")) == "first line"


def test_a_sigterm_lost_in_a_finalizer_is_raised_at_the_next_checkpoint() -> None:
    """Raised inside ``__del__`` (as in matplotlib's weakref callbacks while a plot is collected), the
    Terminated exception is printed and dropped by Python; the next checkpoint raises it again."""
    from robprune_deploy.cli.main import _sigterm_as_interrupt
    from robprune_deploy.errors import Terminated
    from robprune_deploy.progress import progress_bar
    from robprune_deploy.termination import clear_termination, pending_termination

    class SignalsWhenCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        with _sigterm_as_interrupt():
            doomed = SignalsWhenCollected()
            del doomed  # the handler's exception is lost inside __del__
            assert pending_termination() == "SIGTERM"
            with pytest.raises(Terminated, match="SIGTERM"), progress_bar("epochs", 2, enabled=False) as bar:
                bar.advance()
    finally:
        clear_termination()
    assert pending_termination() is None
